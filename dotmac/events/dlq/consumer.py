"""Consuming a dead-letter topic in a group: ``create_dlq_consumer`` and ready-made handlers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from dotmac.events.bus import EventBus, Subscription
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.dlq.entry import DLQEntry
from dotmac.events.errors import ConfigurationError, EncodeError
from dotmac.events.event import Event

__all__ = ["DLQHandler", "alert_on_dlq_entry", "create_dlq_consumer", "log_dlq_entry"]

logger = logging.getLogger("dotmac.events.dlq")

DLQHandler = Callable[[DLQEntry], Awaitable[Any]]


class _RecordBytes(JsonCodec):
    """Hands each record's bytes on undecoded (as the payload), so a dead letter whose original
    was never an event still reaches the handler as a DLQEntry instead of failing to decode."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self._topic = topic

    def encode(self, event: Event) -> bytes:
        raise EncodeError("a dead-letter consumer only reads")

    def decode(self, data: bytes) -> Event:
        return Event(self._topic, data)


@runtime_checkable
class _RawSubscriber(Protocol):
    """A bus that subscribes with a codec of the caller's (the engine's TransportBus); named
    here so this package never imports the engine, which imports it."""

    async def _subscribe_with_codec(
        self,
        topic: str,
        handler: Callable[[Event], Awaitable[Any]],
        codec: Codec,
        *,
        group: str | None,
        concurrency: int,
    ) -> Subscription: ...


async def create_dlq_consumer(
    bus: EventBus,
    dlq_topic: str,
    handler: DLQHandler,
    *,
    group: str | None = "dlq-processor",
    concurrency: int = 1,
) -> Subscription:
    """Consume ``dlq_topic``, calling ``handler`` with a :class:`DLQEntry` per dead letter.

    A dead letter is acked only after ``handler`` returned, like any other event; a record on
    the topic that is not a dead letter fails with DecodeError (and is retried as any failure).
    """
    if not callable(handler):
        raise ConfigurationError("handler", f"must be callable, got {handler!r}")

    async def on_event(event: Event) -> Any:
        # the original read with a plain JsonCodec: an event a validating codec refused is
        # still shown (and can be replayed once the data is fixed)
        return await handler(DLQEntry.from_event(event))

    if not isinstance(bus, _RawSubscriber):
        return await bus.subscribe(dlq_topic, on_event, group=group, concurrency=concurrency)
    if not isinstance(dlq_topic, str) or not dlq_topic:
        raise ConfigurationError("dlq_topic", f"must be a non-empty str, got {dlq_topic!r}")
    if group is not None and (not isinstance(group, str) or not group):
        raise ConfigurationError("group", f"must be a non-empty str or None, got {group!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError("concurrency", f"must be an int >= 1, got {concurrency!r}")
    return await bus._subscribe_with_codec(
        dlq_topic, on_event, _RecordBytes(dlq_topic), group=group, concurrency=concurrency
    )


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
