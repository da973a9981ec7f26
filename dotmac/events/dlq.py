"""Dead letters: what failed, why, and the original message byte for byte so it can be replayed."""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dotmac.events.bus import EventBus, Subscription
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.errors import DecodeError, UnsupportedOperation
from dotmac.events.event import Event

__all__ = [
    "DLQ_HEADER",
    "DLQEntry",
    "SimpleDLQ",
    "alert_on_dlq_entry",
    "create_dlq_consumer",
    "log_dlq_entry",
]

logger = logging.getLogger("dotmac.events.dlq")

DLQ_HEADER = "dotmac-dlq-original-topic"
"""Header set on every dead-letter event; its value is the original topic."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DLQEntry:
    """One dead-lettered message.

    ``original_data`` is the message exactly as it was received; ``original_event`` is it decoded,
    or None when it could not be decoded (then ``error_type`` is ``"DecodeError"``).
    ``attempts`` is how many times it was delivered; ``retry_count`` is ``attempts - 1``.
    """

    original_topic: str
    group: str
    error: str
    error_type: str
    attempts: int
    first_failure_at: datetime
    last_failure_at: datetime
    original_data: bytes
    original_event: Event | None = None
    original_key: str | None = None
    id: str | None = None

    @property
    def retry_count(self) -> int:
        return max(self.attempts - 1, 0)

    @classmethod
    def for_failure(
        cls,
        *,
        topic: str,
        group: str,
        data: bytes,
        error: BaseException,
        attempts: int,
        first_failure_at: datetime | None,
        event: Event | None,
        key: str | None,
    ) -> DLQEntry:
        now = datetime.now(UTC)
        return cls(
            original_topic=topic,
            group=group,
            error=str(error) or repr(error),
            error_type=type(error).__name__,
            attempts=attempts,
            first_failure_at=first_failure_at or now,
            last_failure_at=now,
            original_data=data,
            original_event=event,
            original_key=event.key if event is not None else key,
        )

    def to_event(self, dlq_topic: str) -> Event:
        """The event published to ``dlq_topic`` for this entry."""
        payload = {
            "original_topic": self.original_topic,
            "group": self.group,
            "error": self.error,
            "error_type": self.error_type,
            "attempts": self.attempts,
            "first_failure_at": self.first_failure_at.isoformat(),
            "last_failure_at": self.last_failure_at.isoformat(),
            "original_key": self.original_key,
            "original_data": base64.b64encode(self.original_data).decode("ascii"),
        }
        tenant = self.original_event.tenant_id if self.original_event else None
        return Event(
            dlq_topic,
            payload,
            key=self.original_key,
            headers={DLQ_HEADER: self.original_topic},
            tenant_id=tenant,
        )

    @classmethod
    def from_event(cls, event: Event, codec: Codec | None = None) -> DLQEntry:
        """Read an entry back from a dead-letter event.

        Raises:
            DecodeError: the event is not a dead-letter entry.
        """
        p = event.payload
        try:
            data = base64.b64decode(p["original_data"], validate=True)
            entry = cls(
                original_topic=p["original_topic"],
                group=p["group"],
                error=p["error"],
                error_type=p["error_type"],
                attempts=int(p["attempts"]),
                first_failure_at=datetime.fromisoformat(p["first_failure_at"]),
                last_failure_at=datetime.fromisoformat(p["last_failure_at"]),
                original_data=data,
                original_key=p.get("original_key"),
                id=str(event.id),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"not a dead-letter entry: {exc!r}") from exc
        try:
            original = (codec or JsonCodec()).decode(data)
        except DecodeError:
            original = None
        return DLQEntry(**{**_fields(entry), "original_event": original})

    async def replay(self, bus: EventBus) -> None:
        """Publish the original event again, unchanged (same id), to its original topic.

        Raises:
            UnsupportedOperation: the original could not be decoded, so it cannot be republished.
        """
        if self.original_event is None:
            raise UnsupportedOperation(
                f"dead letter {self.id} holds undecodable bytes ({self.error}); fix and republish"
            )
        await bus.publish(self.original_event)


def _fields(entry: DLQEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in DLQEntry.__dataclass_fields__}


DLQHandler = Callable[[DLQEntry], Awaitable[Any]]


async def create_dlq_consumer(
    bus: EventBus,
    dlq_topic: str,
    handler: DLQHandler,
    *,
    group: str | None = "dlq-processor",
    concurrency: int = 1,
) -> Subscription:
    """Consume ``dlq_topic``, calling ``handler`` with a :class:`DLQEntry` per dead letter.

    A dead letter is acked only after ``handler`` returned, like any other event.
    """

    async def on_event(event: Event) -> Any:
        return await handler(DLQEntry.from_event(event))

    return await bus.subscribe(dlq_topic, on_event, group=group, concurrency=concurrency)


async def log_dlq_entry(entry: DLQEntry) -> None:
    """A DLQ handler that logs each dead letter at WARNING."""
    logger.warning(
        "dead letter from %s (group %s) after %d attempt(s): %s: %s",
        entry.original_topic,
        entry.group,
        entry.attempts,
        entry.error_type,
        entry.error,
    )


async def alert_on_dlq_entry(entry: DLQEntry) -> None:
    """A DLQ handler that logs each dead letter at ERROR, for log-based alerting."""
    logger.error(
        "ALERT dead letter on %s: %s after %d attempt(s): %s (event %s, tenant %s)",
        entry.original_topic,
        entry.error_type,
        entry.attempts,
        entry.error,
        entry.original_event.id if entry.original_event else "undecodable",
        entry.original_event.tenant_id if entry.original_event else None,
    )


class SimpleDLQ:
    """An in-process view of a dead-letter topic: list, replay and remove entries.

    It consumes ``dlq_topic`` in its own group and keeps what it read in memory. Entries are
    acked once held here, so this is a tool for inspection and manual replay in one process;
    a durable failure store is a :func:`create_dlq_consumer` handler writing to your database.
    """

    def __init__(self, bus: EventBus, dlq_topic: str, *, group: str = "simple-dlq") -> None:
        self.bus = bus
        self.dlq_topic = dlq_topic
        self.group = group
        self._entries: dict[str, DLQEntry] = {}
        self._subscription: Subscription | None = None

    async def start(self) -> SimpleDLQ:
        if self._subscription is None:
            self._subscription = await create_dlq_consumer(
                self.bus, self.dlq_topic, self._store, group=self.group
            )
        return self

    async def _store(self, entry: DLQEntry) -> None:
        self._entries[entry.id or str(len(self._entries))] = entry

    def entries(self) -> list[DLQEntry]:
        """Entries held, oldest failure first."""
        return sorted(self._entries.values(), key=lambda e: e.last_failure_at)

    def remove(self, entry_id: str) -> DLQEntry:
        """Forget one entry. Raises KeyError when it is not held."""
        return self._entries.pop(entry_id)

    async def replay(self, entry_id: str) -> None:
        """Republish one entry's original event, then forget the entry."""
        await self._entries[entry_id].replay(self.bus)
        self._entries.pop(entry_id, None)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
