"""The adapter contract: what a transport hands the engine, and what the engine asks of it.

A transport only moves bytes. Its bus sends encoded events (``_send``) and opens a
:class:`Receiver` per subscription; encoding, observers, middleware, the worker pool, ack
batching, redelivery backoff, dead letters and request-reply live above it, once, in
:mod:`dotmac.events.engine`. This module imports nothing of the package, so adapters and the
engine both depend on it and never on each other. The conformance suite in
:mod:`dotmac.events.testing` is this contract's test.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

__all__ = ["Delivery", "Receiver"]


class Delivery:
    """One received message as a transport hands it over: bytes plus what is needed to ack it.

    ``count`` is the transport's delivery count (1 the first time). ``unreadable`` says why the
    transport could not read the message (foreign bytes); the engine then dead-letters it as a
    DecodeError without decoding it. ``token`` is the transport's own (a ledger, a handle).
    """

    __slots__ = (
        "count",
        "data",
        "dead_letter_due",
        "first_failure_at",
        "key",
        "message_id",
        "offset",
        "partition",
        "token",
        "unreadable",
    )

    def __init__(
        self,
        data: bytes,
        count: int,
        message_id: str,
        key: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        token: Any = None,
        unreadable: str | None = None,
    ) -> None:
        self.data = data
        self.count = count
        self.message_id = message_id
        self.key = key
        self.partition = partition
        self.offset = offset
        self.token = token
        self.unreadable = unreadable
        self.first_failure_at: datetime | None = None
        # (error, attempts) of a dead letter whose publish failed: only that is retried
        self.dead_letter_due: tuple[BaseException, int] | None = None

    def __repr__(self) -> str:
        return f"Delivery(message_id={self.message_id!r}, count={self.count}, key={self.key!r})"


class Receiver(Protocol):
    """A transport's consumer for one topic and group, driven by the engine's subscription.

    All methods are called from one task at a time except :meth:`ack`, which may run while a
    :meth:`fetch` is blocked waiting for messages.
    """

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        """Ack ``acks`` (ideally in the same round trip), then return up to ``max_count`` messages.

        May wait a short while (about a second) for messages; returns ``[]`` when none came
        or :meth:`interrupt` was called.
        """
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge handled messages. Acking twice must be harmless."""
        ...

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        """Deliver a failed message again to this consumer with its count increased.

        Returns None when this consumer no longer holds the message (another took it over).
        """
        ...

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back messages that will not be handled here; they stay unacknowledged."""
        ...

    def interrupt(self) -> None:
        """Make a blocked :meth:`fetch` return soon (called when the subscription closes)."""
        ...

    async def close(self) -> None:
        """Leave the group and free resources."""
        ...
