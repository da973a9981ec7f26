"""The EventBus contract. Every transport (memory, Redis Streams, Kafka) keeps it exactly.

Delivery is at-least-once:

* ``publish`` returns only once the transport has accepted the event, otherwise it raises.
* A message is acknowledged only after its handler returned. If the handler raises, the message
  stays unacknowledged and is delivered again (to this or another consumer of the group), after
  a backoff, with ``event.delivery.count`` increased by one.
* Consumers in the same group compete: each message goes to one of them. Different groups each
  get every message. ``group=None`` gives the subscription a private group of its own (fan-out).
* With ``concurrency=1`` messages with the same key are handled in publish order. With
  ``concurrency=N`` up to N handlers run at once, on a pool of N workers; messages with the same
  key always go to the same worker, so first deliveries of a key stay in order.
* A message that cannot be decoded, or whose handler raised :class:`~dotmac.events.errors.Reject`,
  is published to the dead-letter topic (``f"{topic}.DLQ"`` unless set) and only then acked.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from dotmac.events.errors import ConfigurationError, DecodeError, UnsupportedOperation
from dotmac.events.event import Event
from dotmac.events.middleware import ConsumeMiddleware
from dotmac.events.policy import FailurePolicy
from dotmac.events.registry import HandlerRegistry, default_registry

__all__ = [
    "BacklogStats",
    "EventBus",
    "EventHandler",
    "HealthStatus",
    "ReadRecord",
    "Subscription",
    "SubscriptionSet",
]

EventHandler = Callable[..., Any]
"""A callable taking an Event (or, for a topic with a schema, the typed payload and optionally
the Event): ``async def`` runs on the event loop, plain ``def`` in the bus's bounded pool of
worker threads. Its return value is the reply to ``request()``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthStatus:
    """The outcome of one health check."""

    healthy: bool
    adapter: str
    latency_ms: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class BacklogStats:
    """Where messages are for one topic and group; None where the transport cannot tell.

    ``length``: messages held for the topic (stream length, or sum of partition end offsets
    minus start offsets). ``lag``: messages the group has not been handed yet. ``pending``:
    handed out and not acked. ``oldest_pending_age``: seconds since the oldest pending message was
    first handed out (retries, claims and the heartbeats that keep it claimed do not reset it);
    None when nothing is pending or the transport cannot tell. ``dlq_depth``: messages held on
    the topic's dead-letter topic (see :meth:`EventBus.stats` for which topic that is).
    """

    topic: str
    group: str | None
    length: int | None = None
    lag: int | None = None
    pending: int | None = None
    oldest_pending_age: float | None = None
    dlq_depth: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRecord:
    """One record of a topic's log, as :meth:`EventBus.read_records` yields it.

    ``event`` is the decoded event, or None when the bytes are not an event this bus can read:
    ``error`` then says why and ``data`` holds them as they are. ``position`` is the
    transport's address of the record (memory offset, Redis entry id, Kafka
    ``"partition:offset"``); pass it as ``since`` to read on after it. ``timestamp`` is when the
    broker stored the record (UTC), None where the transport does not know. ``headers`` are
    the transport's own record headers (Kafka), not the event's.
    """

    topic: str
    position: str
    timestamp: datetime | None
    key: str | None
    data: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    event: Event | None = None
    error: DecodeError | None = None


class Subscription(abc.ABC):
    """A running consumer of one topic in one group."""

    topic: str
    group: str

    @abc.abstractmethod
    async def close(self, timeout: float | None = None) -> None:
        """Stop fetching, wait up to ``timeout`` seconds for running handlers, ack what finished.

        Messages whose handlers did not finish, and messages fetched but not started, stay
        unacknowledged and go to another consumer of the group. Idempotent.
        """

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once :meth:`close` has finished."""


class SubscriptionSet(Subscription):
    """One handler subscribed to several topics: closes them all together."""

    def __init__(self, subscriptions: Sequence[Subscription]) -> None:
        self.subscriptions = tuple(subscriptions)
        self.topic = ",".join(s.topic for s in self.subscriptions)
        self.group = self.subscriptions[0].group if self.subscriptions else ""

    async def close(self, timeout: float | None = None) -> None:
        await asyncio.gather(*(s.close(timeout) for s in self.subscriptions))

    @property
    def closed(self) -> bool:
        return all(s.closed for s in self.subscriptions)


class EventBus(abc.ABC):
    """Publish events and subscribe handlers to topics. Use it as an async context manager."""

    adapter: str
    """Short transport name: ``"memory"``, ``"redis"`` or ``"kafka"``."""

    @abc.abstractmethod
    async def publish(
        self,
        event: Event,
        *,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> None:
        """Publish one event; return once the transport has accepted it.

        With ``delay`` (seconds or a timedelta) or ``at`` (a timezone-aware datetime) the broker
        holds the event and appends it to its topic when due: never earlier, later by at most
        the transport's precision, and surviving restarts of every process of ours.

        Raises:
            EncodeError: the payload is not JSON-serialisable or failed schema validation.
            PublishError: the transport did not accept the event (nothing was half-sent).
            ConfigurationError: a negative ``delay``, a naive ``at``, or both given.
            UnsupportedOperation: a delay on a transport that cannot hold events.
            BusClosedError: the bus is closed.
        """

    async def topics(self, pattern: str | None = None) -> list[str]:
        """The broker's topics, sorted; with ``pattern`` (``user.*``) only those it matches.

        Raises:
            UnsupportedOperation: the transport cannot list its topics.
        """
        raise UnsupportedOperation(f"the {self.adapter} bus cannot list its topics")

    @abc.abstractmethod
    async def publish_many(self, events: Sequence[Event]) -> None:
        """Publish several events in one round trip where the transport allows it.

        Every event is encoded before any is sent, so an EncodeError sends nothing. On a
        PublishError some events may have been accepted; publishing them again is safe for
        at-least-once consumers.
        """

    @abc.abstractmethod
    async def subscribe(
        self,
        topic: str | Sequence[str],
        handler: EventHandler,
        *,
        group: str | None = None,
        concurrency: int = 1,
        policy: FailurePolicy | None = None,
        middleware: Sequence[ConsumeMiddleware] = (),
    ) -> Subscription:
        """Start consuming ``topic`` in ``group`` and return the running subscription.

        ``topic`` may be a list: one handler on several topics (a :class:`SubscriptionSet`;
        ``event.topic`` names the topic each event came from). ``middleware`` wraps this
        handler (see :mod:`dotmac.events.middleware`). A plain ``def`` handler runs in a worker
        thread, never on the event loop.

        ``policy`` decides, when the handler raises, how long to wait before the next delivery
        or whether to dead-letter now (run_consumer passes its ConsumerOptions). The default
        redelivers with capped exponential backoff until the handler succeeds or raises Reject.

        Returns once the consumer has joined the group, so events published after this call
        returns reach it. A named group that does not exist yet starts from the earliest
        retained event; a private group (``group=None``) starts at the end of the topic.

        Raises:
            ConfigurationError: ``concurrency`` is below 1 or the topic/group name is invalid.
            BusClosedError: the bus is closed.
        """

    async def subscribe_batch(
        self,
        topic: str | Sequence[str],
        handler: Callable[[list[Event]], Any],
        *,
        group: str | None = None,
        max_batch_size: int = 100,
        max_wait_ms: float = 100.0,
        policy: FailurePolicy | None = None,
    ) -> Subscription:
        """Like :meth:`subscribe`, but ``handler`` receives a list of up to ``max_batch_size``
        events, taken once that many wait or ``max_wait_ms`` after the first arrived.

        The batch is acked after the handler returns. Raising
        :class:`~dotmac.events.errors.BatchFailed` naming some events retries (or dead-letters)
        only those and acks the rest; any other exception retries the whole batch. Retries
        are blocking (a batch's failed events come first in the next batch), and one batch
        runs at a time, so a key's events are handled in order unless a partial failure
        retries some of them after others succeeded.

        Raises:
            ConfigurationError: a bad size, wait, group or topic, or ``retry_mode="reschedule"``.
            UnsupportedOperation: the transport has no batch subscriptions.
        """
        raise UnsupportedOperation(f"the {self.adapter} bus has no batch subscriptions")

    async def register_handler(
        self, handler: EventHandler, *, registry: HandlerRegistry | None = None
    ) -> list[Subscription]:
        """Subscribe ``handler`` as ``@event_handler(...)`` declared it (EarnORM's shape).

        Raises:
            ConfigurationError: ``handler`` was never declared with ``@event_handler``.
        """
        routes = (registry or default_registry).routes_for(handler)
        if not routes:
            name = getattr(handler, "__qualname__", repr(handler))
            raise ConfigurationError(
                "handler", f"{name} was not declared with @event_handler(topic)"
            )
        made: list[Subscription] = []
        try:
            for route in routes:
                subscription = await self.subscribe(
                    route.topics,
                    route.handler,
                    group=route.group,
                    concurrency=route.concurrency,
                    policy=route.policy,
                )
                made.append(subscription)
        except BaseException:  # all or nothing, as EventRouter.start
            await asyncio.gather(*(s.close() for s in made), return_exceptions=True)
            raise
        return made

    async def request(self, topic: str, payload: Any, *, timeout: float = 5.0) -> Any:
        """Publish ``payload`` and return the subscribed handler's return value.

        Raises:
            RequestTimeout: no reply within ``timeout`` seconds (nothing is left waiting).
            UnsupportedOperation: this transport has no request-reply.
        """
        raise UnsupportedOperation(f"{self.adapter} bus does not support request()")

    def read_records(
        self,
        topic: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
        follow: bool = False,
    ) -> AsyncGenerator[ReadRecord, None]:
        """Read back what the transport retains of ``topic``, without joining a consumer group.

        Nothing is acked or committed: every group is left exactly as it was. Records come in
        log order (on Kafka in order per partition, partitions interleaved as they arrive).

        ``since``: None, the oldest record held; a timezone-aware datetime, the first record
        stored at or after it; ``"end"``, only records appended from now on (with
        ``follow``); a position from an earlier record: the records after it (on Kafka,
        ``"p:o"`` reads partition ``p`` only; ``"0:12,1:40"`` several). ``until``: a datetime,
        records stored before it; a position, up to and including it. ``limit``: stop after
        that many records. ``follow``: keep waiting for new records instead of stopping at
        the end of the log (ends at ``limit``, at ``until``, or when the bus closes).

        The arguments are checked at the call; the broker is first asked when iteration
        starts. Iterate with ``contextlib.aclosing`` to free the reader's connection as soon
        as you stop early.

        Raises:
            ConfigurationError: a naive datetime, a position this transport never gives,
                ``limit`` below 1.
            UnsupportedOperation: the transport keeps no log it can read back.
            BusClosedError: the bus is closed.
            TransportError: (while iterating) the broker failed.
        """
        raise UnsupportedOperation(f"{self.adapter} bus cannot read its log back")

    def read(
        self,
        topic: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
        follow: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """The events of :meth:`read_records` (same arguments), decoded with the bus's codec.

        ``event.delivery.message_id`` is the record's position (``count`` is 0: a read is not
        a delivery). A record that cannot be decoded is never skipped: iteration stops with
        DecodeError naming its position (use :meth:`read_records` to see such records and go
        on).
        """
        records = self.read_records(topic, since=since, until=until, limit=limit, follow=follow)
        return _events_of(records)

    async def replay(
        self,
        topic: str,
        handler: EventHandler,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
    ) -> int:
        """Call ``handler`` with each event :meth:`read` yields, in order; return how many.

        For rebuilding state from the log. No group is joined and nothing is acked; the
        handler runs as a subscribed one would (``async def`` on the loop, ``def`` in a worker
        thread, a typed handler gets its model). The first exception the handler raises stops
        the replay and propagates, as does a DecodeError for a record that cannot be decoded:
        the events before it were handled, none after it.

        Raises:
            ConfigurationError, UnsupportedOperation, BusClosedError: as :meth:`read_records`.
        """
        raise UnsupportedOperation(f"{self.adapter} bus cannot read its log back")

    @abc.abstractmethod
    async def stats(
        self, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> BacklogStats:
        """Backlog numbers for ``topic`` (and ``group``), at bounded cost.

        ``dlq_depth`` counts ``dlq_topic`` when given (a process that does not consume, such as
        the CLI, must name a custom one); otherwise the dead-letter topic of this bus's live
        subscription to ``topic`` in ``group`` (its ``ConsumerOptions.dlq_topic``), else
        ``{topic}.DLQ``.

        Raises:
            TransportError: the broker could not be asked.
        """

    @abc.abstractmethod
    async def health(self) -> HealthStatus:
        """Check the transport once (it never raises; failures give ``healthy=False``)."""

    @abc.abstractmethod
    async def close(self, timeout: float | None = None) -> None:
        """Close every subscription (see :meth:`Subscription.close`), then the transport.

        Idempotent. Afterwards ``publish`` and ``subscribe`` raise BusClosedError.
        """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _events_of(records: AsyncGenerator[ReadRecord, None]) -> AsyncGenerator[Event, None]:
    async with contextlib.aclosing(records):
        async for record in records:
            if record.event is None:
                raise DecodeError(
                    f"record {record.position} of {record.topic!r} cannot be decoded: "
                    f"{record.error}"
                ) from record.error
            yield record.event
