"""The adapter contract: what a transport hands the engine, and what the engine asks of it.

A transport only moves bytes. Its bus sends encoded events (``_send``) and opens a
:class:`Receiver` per subscription; encoding, observers, middleware, the worker pool, ack
batching, redelivery backoff, dead letters and request-reply live above it, once, in
:mod:`dotmac.events.engine`. This module imports nothing of the package, so adapters and the
engine both depend on it and never on each other. A transport that keeps a log also reads it
back as :class:`LogRecord` objects (``_read_log``), without a group and without acking
anything; the engine decodes them for ``bus.read``. The conformance suite in
:mod:`dotmac.events.testing` is this contract's test.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any, Protocol

__all__ = ["Delivery", "LogReader", "LogRecord", "Receiver", "RecordWriter"]


class Delivery:
    """One received message as a transport hands it over: bytes plus what is needed to ack it.

    ``count`` is the transport's delivery count (1 the first time). ``unreadable`` says why the
    transport could not read the message (foreign bytes); the engine then dead-letters it as a
    DecodeError without decoding it. ``token`` is the transport's own (a ledger, a handle).
    ``headers`` are the record's transport headers (Kafka record headers; on Redis and memory
    only records written with headers have them, dead letters and replays): a dead letter
    keeps them, and the engine shows the dead-letter ones to handlers (``dotmac.events.dlq``).
    """

    __slots__ = (
        "count",
        "data",
        "dead_letter_due",
        "first_failure_at",
        "headers",
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
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self.data = data
        self.count = count
        self.headers = headers
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


class LogRecord:
    """One record read back from a transport's log, outside any consumer group.

    ``position`` is the transport's own address of the record, a string that ``_read_log``
    accepts back as ``since``/``until``: the memory log's offset (``"12"``), the Redis entry id
    (``"1767225600000-0"``), Kafka's ``"partition:offset"``. ``timestamp`` is when the broker
    stored it (Redis: the entry id's time; Kafka: the record timestamp; memory: append time), in
    UTC, or None when the transport does not know. ``headers`` are the transport's own record
    headers: Kafka's, the extra fields of a Redis entry (any field but ``data`` and ``key``), those
    a memory record was written with. ``unreadable`` says why the bytes are not an event of
    ours (foreign bytes), as :attr:`Delivery.unreadable` does.
    """

    __slots__ = (
        "data",
        "headers",
        "key",
        "offset",
        "partition",
        "position",
        "timestamp",
        "unreadable",
    )

    def __init__(
        self,
        position: str,
        data: bytes,
        *,
        timestamp: datetime | None = None,
        key: str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        offset: int | None = None,
        unreadable: str | None = None,
    ) -> None:
        self.position = position
        self.data = data
        self.timestamp = timestamp
        self.key = key
        self.headers = tuple(headers)
        self.partition = partition
        self.offset = offset
        self.unreadable = unreadable

    def __repr__(self) -> str:
        return f"LogRecord(position={self.position!r}, key={self.key!r}, bytes={len(self.data)})"


class RecordWriter(Protocol):
    """How a transport writes one record as it is, with transport headers (a TransportBus's
    ``_send_raw``): dead letters (the original bytes and key plus failure headers) and their
    replays. Returns when the broker accepted it; PublishError otherwise."""

    async def __call__(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None: ...


class LogReader(Protocol):
    """How a transport reads its log back (a TransportBus's ``_read_log``).

    Reading joins no consumer group and acks or commits nothing: groups are exactly as they
    were. Records come in log order; on a partitioned log (Kafka) in order within each
    partition, partitions interleaved as their records arrive. The engine checks the arguments
    first, so a transport sees only these forms:

    * ``since``: None, the oldest record held; a UTC datetime, the first record stored at or
      after it; ``"end"``, only records appended after the read began; any other string, a
      position this transport returned earlier: the records *after* it. A string that is not
      one of its positions raises ConfigurationError naming ``since``.
    * ``until``: None, no bound; a UTC datetime, records stored before it; a position, records
      up to and including it (ConfigurationError naming ``until`` when it is not one).
    * ``limit``: how many records the caller will take at most (the engine stops there);
      a hint for page sizes. None: no limit.
    * ``follow``: False ends at the end of the log; True keeps waiting for new records and
      yields None whenever a wait of about a second brought nothing, so the caller can stop.

    Closing the iterator (``aclose``) releases the connections it holds. Broker failures raise
    TransportError.
    """

    def __call__(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]: ...
