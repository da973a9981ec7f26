"""TransportBus: the EventBus contract run once over any transport's ``_send`` and receivers.

An adapter subclasses it and supplies ``_send`` (bytes to the broker) and ``_open_receiver`` (a
:class:`~dotmac.events.transport.Receiver` per subscription), plus ``health`` and ``stats``.
Everything else (encoding, observers, subscriptions, request-reply, close) is here.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from dotmac.events.bus import EventBus, EventHandler, ReadRecord, Subscription, SubscriptionSet
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.delays import due_time
from dotmac.events.engine.batching import BatchHandler, BatchSubscription
from dotmac.events.engine.calling import is_async_callable, make_awaitable
from dotmac.events.engine.handling import REPLY_TO_HEADER
from dotmac.events.engine.patterns import PatternSubscription
from dotmac.events.engine.reading import check_bounds, decoded_records, replay_events
from dotmac.events.engine.subscription import ReceiverSubscription
from dotmac.events.errors import (
    BusClosedError,
    ConfigurationError,
    EncodeError,
    EventBusError,
    PublishError,
    RequestTimeout,
    UnsupportedOperation,
)
from dotmac.events.event import Event, EventMetadata
from dotmac.events.middleware import ConsumeMiddleware, PublishHook
from dotmac.events.observability.observer import NoopObserver, Observer
from dotmac.events.patterns import TopicPattern, is_pattern
from dotmac.events.policy import FailurePolicy, RedeliverPolicy
from dotmac.events.registry import topic_list
from dotmac.events.schemas import SchemaCodec, TopicSchema, typed_handler
from dotmac.events.transport import LogRecord, Receiver, RecordWriter

__all__ = ["HANDLER_THREADS", "MAX_EVENT_BYTES", "TransportBus", "retry_topic"]

MAX_EVENT_BYTES = 1_048_576
"""The default bound on one encoded event (1 MiB, Kafka's default ``max_request_size``)."""

HANDLER_THREADS = 16
"""Threads a bus runs plain-function (``def``) handlers in, at most, across its subscriptions."""


def retry_topic(group: str, topic: str) -> str:
    """Where ``group``'s non-blocking retries of ``topic`` wait (an internal topic: patterns
    never match it)."""
    return f"_retry.{group}.{topic}"


class TransportBus(EventBus):
    """EventBus contract implemented once over a transport's ``_send`` and ``_open_receiver``."""

    adapter = "transport"
    pattern_refresh = 5.0
    """Seconds between topic discoveries of a pattern subscription (see ``subscribe``)."""

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        observer: Observer | None = None,
        close_timeout: float = 10.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if close_timeout <= 0:
            raise ConfigurationError("close_timeout", f"must be > 0, got {close_timeout}")
        if (
            not isinstance(max_event_bytes, int)
            or isinstance(max_event_bytes, bool)
            or max_event_bytes < 1
        ):
            raise ConfigurationError(
                "max_event_bytes", f"must be an int >= 1, got {max_event_bytes!r}"
            )
        self.max_event_bytes = max_event_bytes
        """Publishing an event whose encoded bytes exceed this raises EncodeError."""
        self.codec: Codec = codec or JsonCodec()
        self.observer: Observer = observer or NoopObserver()
        self._observed = type(self.observer) is not NoopObserver
        self._middleware: list[ConsumeMiddleware] = []
        self._publish_hooks: list[PublishHook] = []
        self._schemas: dict[str, TopicSchema] = {}
        self._threads: ThreadPoolExecutor | None = None
        self.close_timeout = close_timeout
        self._subscriptions: set[Subscription] = set()
        self._closing = False  # no new subscriptions; publishing still works for handlers
        self._closed = False
        self._close_task: asyncio.Future[None] | None = None
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._inbox: str | None = None
        self._inbox_lock: asyncio.Lock | None = None
        self._topic_watchers: set[Callable[[], None]] = set()

    # --- what a transport implements -------------------------------------------------------

    @abc.abstractmethod
    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """Send encoded events; return when the broker accepted all of them."""

    @abc.abstractmethod
    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int, from_beginning: bool = False
    ) -> Receiver:
        """Join ``group`` on ``topic`` (creating it if needed) and return its receiver.

        A transport that implements ``_list_topics`` (so it can follow patterns) also takes
        ``from_beginning=True``: a group that does not exist yet, private or named, starts at
        the beginning of the topic instead of where it would otherwise.
        """

    async def _list_topics(self) -> Iterable[str]:
        """Every topic name the broker holds now (pattern subscriptions match against them)."""
        raise UnsupportedOperation(
            f"the {self.adapter} transport cannot list its topics, so it cannot follow a pattern"
        )

    async def topics(self, pattern: str | None = None) -> list[str]:
        """The broker's topics, sorted; with ``pattern`` (``user.*``) only those it matches.

        Raises:
            UnsupportedOperation: the transport cannot list its topics.
            ConfigurationError: ``pattern`` is not a valid pattern.
        """
        self._check_open()
        matcher = None if pattern is None else TopicPattern(pattern)
        names = await self._list_topics()
        return sorted(n for n in names if matcher is None or matcher.matches(n))

    def _topic_appeared(self) -> None:
        """Tell pattern subscriptions to look for new topics now, not at the next refresh."""
        for changed in list(self._topic_watchers):
            changed()

    async def _close_transport(self) -> None:
        """Release connections once every subscription is closed."""

    async def _drop_topic(self, topic: str) -> None:
        """Delete a topic this bus created for itself (its request-reply inbox) at close."""

    def _read_log(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]:
        """Read ``topic``'s log back without a group (the contract: ``transport.LogReader``).
        A transport without it makes ``read`` raise UnsupportedOperation."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot read its log back")

    async def _send_raw(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Write one record as it is, with transport headers (``transport.RecordWriter``): how
        dead letters and their replays are written. A transport without it dead-letters the old
        wrapper event instead, and cannot replay dead letters."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot write record headers")

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int:
        """Delete the records at ``positions`` (as ``_read_log`` gave them); return how many
        were there. Transports that cannot delete one record raise UnsupportedOperation."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot delete single records")

    async def _delete_all(self, topic: str) -> None:
        """Delete every record ``topic`` holds now (its groups stay)."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot delete records")

    def _record_writer(self) -> RecordWriter | None:
        """``_send_raw`` with errors translated, or None when the transport has none."""
        if type(self)._send_raw is TransportBus._send_raw:
            return None
        return self.send_record

    async def send_record(
        self,
        topic: str,
        data: bytes,
        key: str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Write one record as it is: ``data`` unencoded, ``headers`` as transport headers
        (Kafka record headers, extra Redis entry fields). No publish hooks, no observer: this
        is how dead letters and their replays travel, byte for byte.

        Raises:
            UnsupportedOperation: the transport cannot write record headers.
            PublishError: the broker did not take the record.
        """
        self._check_open()
        try:
            await self._send_raw(topic, data, key, headers)
        except EventBusError:
            raise
        except Exception as exc:
            raise PublishError(f"{self.adapter}: record write failed: {exc!r}") from exc

    def _prefetch(self, concurrency: int) -> int:
        """How many messages a subscription may hold at once (fetched but not acked)."""
        return max(100, 2 * concurrency)

    def _stats_dlq_topic(self, topic: str, group: str | None, dlq_topic: str | None) -> str:
        """The dead-letter topic ``stats`` counts: ``dlq_topic`` if given, else that of a live
        subscription of this bus to ``topic`` (in ``group``, when given), else ``{topic}.DLQ``."""
        if dlq_topic is not None:
            if not isinstance(dlq_topic, str) or not dlq_topic:
                raise ConfigurationError("dlq_topic", f"must be a non-empty str, got {dlq_topic!r}")
            return dlq_topic
        for subscription in self._subscriptions:
            if (
                isinstance(subscription, ReceiverSubscription)
                and subscription.topic == topic
                and (group is None or subscription.group == group)
                and not subscription.closed
            ):
                return subscription.dlq_topic
        return f"{topic}.DLQ"

    # --- the contract ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError(f"{self.adapter} bus is closed")

    def _check_not_closing(self) -> None:
        if self._closing:
            raise BusClosedError(f"{self.adapter} bus is closed")

    def add_middleware(self, middleware: ConsumeMiddleware) -> None:
        """Wrap every handler call of subscriptions made from now on (outermost first)."""
        if not callable(middleware):
            raise ConfigurationError("middleware", f"must be callable, got {middleware!r}")
        self._middleware.append(middleware)

    def add_publish_hook(self, hook: PublishHook) -> None:
        """Run ``hook(event) -> event`` on every publish, in the order added; raising refuses."""
        if not callable(hook):
            raise ConfigurationError("hook", f"must be callable, got {hook!r}")
        self._publish_hooks.append(hook)

    def register_schema(self, topic: str, model: type[Any]) -> None:
        """Give ``topic`` a payload schema: a pydantic v2 model, a msgspec Struct or a dataclass.

        From now on ``publish`` checks payloads for ``topic`` (raising ValidationError, which
        names the field), dumps a model instance to JSON and sets ``metadata.schema_version``;
        subscriptions to ``topic`` made from now on dead-letter payloads that do not match
        (as a DecodeError) without calling the handler. Register before subscribing.

        Raises:
            ConfigurationError: ``model`` is not a pydantic model, a Struct or a dataclass.
        """
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("topic", f"must be a non-empty str, got {topic!r}")
        if not self._schemas:  # an ordinary publish hook, run first: no cost until used
            self._publish_hooks.insert(0, self._schema_checked)
        self._schemas[topic] = TopicSchema(model)

    def _schema_checked(self, event: Event) -> Event:
        schema = self._schemas.get(event.topic)
        return event if schema is None else schema.for_publish(event)

    def _hooked(self, event: Event) -> Event:
        for hook in self._publish_hooks:
            event = hook(event)
            if not isinstance(event, Event):
                raise ConfigurationError(
                    "hook", f"a publish hook must return an Event, got {type(event).__name__}"
                )
        return event

    async def publish(
        self,
        event: Event,
        *,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> None:
        """See :meth:`EventBus.publish`; ``delay``/``at`` hold the event in the broker until due."""
        if self._publish_hooks:
            event = self._hooked(event)
        if delay is None and at is None:
            await self._publish(event)
            return
        due = due_time(delay, at, self._now())
        if due is not None and due > self._now():
            await self.publish_later(event.topic, [event], due)
        else:
            await self._publish(event)

    async def publish_later(self, topic: str, events: Sequence[Event], due: float) -> None:
        """Hand ``events`` to the broker to append to ``topic`` at Unix time ``due``, without
        the publish hooks. ``topic`` may differ from the events' own (a retry topic): the
        events keep theirs, so handlers see the topic they were published to."""
        self._check_open()
        encode = self.codec.encode
        if not self._observed:
            batch = [(event, encode(event)) for event in events]
            await self._schedule_translated(topic, batch, due)
            return
        with contextlib.ExitStack() as stack:
            batch = []
            for event in events:
                extra = stack.enter_context(self.observer.publishing(event, adapter=self.adapter))
                ready = event.with_headers(extra) if extra else event
                batch.append((ready, encode(ready)))
            await self._schedule_translated(topic, batch, due)

    async def _schedule_translated(
        self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float
    ) -> None:
        self._check_sizes(batch)
        try:
            await self._schedule(topic, batch, due)
        except EventBusError:
            raise
        except Exception as exc:
            raise PublishError(f"{self.adapter}: delayed publish failed: {exc!r}") from exc

    def _now(self) -> float:
        """The Unix time delays are measured from (memory's clock can be moved by tests)."""
        return time.time()

    async def _schedule(self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float) -> None:
        """Keep encoded events in the broker until Unix time ``due``, then append them to
        ``topic`` as ``_send`` would (keys kept). Return once the broker holds them durably:
        they must reach ``topic`` even if every process of ours restarts. Never early."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot delay events")

    async def _publish(self, event: Event) -> None:
        """Publish without the publish hooks: how the engine sends dead letters and replies,
        which a hook meant for application events must not refuse."""
        self._check_open()
        if self._observed:
            with self.observer.publishing(event, adapter=self.adapter) as extra:
                if extra:
                    event = event.with_headers(extra)
                await self._send_translated([(event, self.codec.encode(event))])
        else:
            await self._send_translated([(event, self.codec.encode(event))])

    async def publish_many(self, events: Sequence[Event]) -> None:
        self._check_open()
        if not events:
            return
        if self._publish_hooks:
            events = [self._hooked(event) for event in events]
        if not self._observed:
            encode = self.codec.encode
            await self._send_translated([(event, encode(event)) for event in events])
            return
        with contextlib.ExitStack() as stack:
            batch = []
            for event in events:
                extra = stack.enter_context(self.observer.publishing(event, adapter=self.adapter))
                ready = event.with_headers(extra) if extra else event
                batch.append((ready, self.codec.encode(ready)))
            await self._send_translated(batch)

    def _check_sizes(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """Refuse the whole batch, before anything is sent, if one event is too large."""
        limit = self.max_event_bytes
        for event, data in batch:
            if len(data) > limit:
                raise EncodeError(
                    f"event for topic {event.topic!r} is {len(data)} bytes encoded, above "
                    f"max_event_bytes ({limit}); nothing of this publish was sent"
                )

    async def _send_translated(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        self._check_sizes(batch)
        try:
            await self._send(batch)
        except EventBusError:
            raise
        except Exception as exc:  # a transport bug must still surface as our error
            raise PublishError(f"{self.adapter}: publish failed: {exc!r}") from exc

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
        """See :meth:`EventBus.subscribe`. ``policy`` decides retry delays and dead-lettering
        (run_consumer passes its ConsumerOptions); the default redelivers with backoff forever.
        ``middleware`` wraps this subscription's handler inside the bus's own middleware.

        A topic holding ``*`` is a pattern (:mod:`dotmac.events.patterns`): it follows every
        matching topic, those found later within :attr:`pattern_refresh` seconds."""
        self._check_not_closing()
        topics = topic_list(topic)
        patterns = {name: TopicPattern(name) for name in topics if is_pattern(name)}
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigurationError("group", f"must be a non-empty str or None, got {group!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError("concurrency", f"must be an int >= 1, got {concurrency!r}")
        if not callable(handler):
            raise ConfigurationError("handler", f"must be callable, got {handler!r}")
        rescheduling = policy is not None and policy.retry_mode == "reschedule"
        if rescheduling and group is None:
            raise ConfigurationError(
                "retry_mode",
                "'reschedule' needs a named group: its retries wait in the group's own retry "
                "topic, which must outlive this process",
            )
        if not is_async_callable(handler) and policy is not None and policy.handler_timeout:
            raise ConfigurationError(
                "handler_timeout",
                "cannot limit a plain def handler: a thread cannot be stopped, so each retry "
                "would run beside the one still going; make the handler async or drop the limit",
            )
        typed = typed_handler(handler)
        call = make_awaitable(handler if typed is None else typed[0], self._handler_threads)
        chain = [*self._middleware, *middleware]
        group_name = group or f"private-{uuid.uuid4().hex}"
        subscriptions: list[Subscription] = []

        async def open_topic(name: str, from_beginning: bool = False) -> Subscription:
            schema = self._schemas.get(name) if typed is None else typed[1]
            codec = self.codec if schema is None else SchemaCodec(self.codec, schema)
            main = await self._subscribe_one(
                name,
                call,
                group_name,
                group is None,
                concurrency,
                policy,
                chain,
                codec,
                from_beginning=from_beginning,
                reschedule_to=retry_topic(group_name, name) if rescheduling else None,
            )
            if not rescheduling:
                return main
            try:  # the group's retries of this topic: handled like the topic's own events
                retries = await self._subscribe_one(
                    name,
                    call,
                    group_name,
                    False,
                    concurrency,
                    policy,
                    chain,
                    codec,
                    from_beginning=True,
                    receive_from=retry_topic(group_name, name),
                    reschedule_to=retry_topic(group_name, name),
                )
            except BaseException:
                await main.close()
                raise
            return SubscriptionSet([main, retries])

        try:
            for name in topics:
                if name in patterns:
                    one = await self._follow(patterns[name], group_name, policy, open_topic)
                else:
                    one = await open_topic(name)
                subscriptions.append(one)
        except BaseException:
            await asyncio.gather(*(s.close() for s in subscriptions), return_exceptions=True)
            raise
        return subscriptions[0] if len(subscriptions) == 1 else SubscriptionSet(subscriptions)

    async def _subscribe_one(
        self,
        topic: str,
        handler: EventHandler,
        group: str,
        private: bool,
        concurrency: int,
        policy: FailurePolicy | None,
        middleware: Sequence[ConsumeMiddleware],
        codec: Codec | None = None,
        *,
        from_beginning: bool = False,
        receive_from: str | None = None,
        reschedule_to: str | None = None,
    ) -> Subscription:
        """Subscribe to ``topic``: events read from ``receive_from`` (default: ``topic``, else
        its retry topic) are handled as ``topic``'s; failures are re-published, delayed, to
        ``reschedule_to`` when given (non-blocking retries)."""
        prefetch = self._prefetch(concurrency)
        source = receive_from or topic
        if from_beginning:  # only patterns and retry topics ask: other adapters need not know it
            receiver = await self._open_receiver(
                source, group, private=private, prefetch=prefetch, from_beginning=True
            )
        else:
            receiver = await self._open_receiver(source, group, private=private, prefetch=prefetch)
        if self._closing:  # close() began while the receiver was opening
            await receiver.close()
            raise BusClosedError(f"{self.adapter} bus is closed")
        subscription = ReceiverSubscription(
            receiver=receiver,
            topic=topic,
            group=group,
            adapter=self.adapter,
            handler=handler,
            concurrency=concurrency,
            capacity=prefetch,
            policy=policy or RedeliverPolicy(),
            codec=codec or self.codec,
            observer=self.observer,
            publish=self._publish,
            close_timeout=self.close_timeout,
            on_closed=self._forget,
            middleware=middleware,
            reschedule=None if reschedule_to is None else self._rescheduler(reschedule_to),
            send_raw=self._record_writer(),
        )
        self._subscriptions.add(subscription)
        subscription.start()
        return subscription

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
        """See :meth:`EventBus.subscribe_batch`; the flow is in ``engine/batching.py``."""
        self._check_not_closing()
        topics = topic_list(topic)
        patterns = {name: TopicPattern(name) for name in topics if is_pattern(name)}
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigurationError("group", f"must be a non-empty str or None, got {group!r}")
        if not callable(handler):
            raise ConfigurationError("handler", f"must be callable, got {handler!r}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
            raise ConfigurationError("max_batch_size", f"must be an int, got {max_batch_size!r}")
        if max_batch_size < 1:
            raise ConfigurationError("max_batch_size", f"must be >= 1, got {max_batch_size}")
        if (
            isinstance(max_wait_ms, bool)
            or not isinstance(max_wait_ms, int | float)
            or not 0 <= max_wait_ms < 3_600_000
        ):
            raise ConfigurationError("max_wait_ms", f"must be >= 0 ms, got {max_wait_ms!r}")
        if policy is not None and policy.retry_mode == "reschedule":
            raise ConfigurationError(
                "retry_mode", "batch handlers retry in place ('redeliver'), not 'reschedule'"
            )
        call: BatchHandler = make_awaitable(handler, self._handler_threads)
        group_name = group or f"private-{uuid.uuid4().hex}"
        chosen = policy or RedeliverPolicy()

        async def open_topic(name: str, from_beginning: bool = False) -> Subscription:
            schema = self._schemas.get(name)
            codec = self.codec if schema is None else SchemaCodec(self.codec, schema)
            receiver = await self._open_receiver(
                name,
                group_name,
                private=group is None,
                prefetch=2 * max_batch_size,
                **({"from_beginning": True} if from_beginning else {}),
            )
            if self._closing:
                await receiver.close()
                raise BusClosedError(f"{self.adapter} bus is closed")
            subscription = BatchSubscription(
                receiver=receiver,
                topic=name,
                group=group_name,
                adapter=self.adapter,
                handler=call,
                max_batch_size=max_batch_size,
                max_wait=max_wait_ms / 1000,
                policy=chosen,
                codec=codec,
                observer=self.observer,
                publish=self._publish,
                close_timeout=self.close_timeout,
                on_closed=self._forget,
                send_raw=self._record_writer(),
            )
            self._subscriptions.add(subscription)
            subscription.start()
            return subscription

        subscriptions: list[Subscription] = []
        try:
            for name in topics:
                if name in patterns:
                    one = await self._follow(patterns[name], group_name, policy, open_topic)
                else:
                    one = await open_topic(name)
                subscriptions.append(one)
        except BaseException:
            await asyncio.gather(*(s.close() for s in subscriptions), return_exceptions=True)
            raise
        return subscriptions[0] if len(subscriptions) == 1 else SubscriptionSet(subscriptions)

    async def _subscribe_with_codec(
        self,
        topic: str,
        handler: Callable[[Event], Awaitable[Any]],
        codec: Codec,
        *,
        group: str | None,
        concurrency: int,
    ) -> Subscription:
        """A subscription whose records ``codec`` decodes instead of the bus's, without the
        bus's middleware: how a dead-letter consumer gets every record's bytes."""
        self._check_not_closing()
        name = group or f"private-{uuid.uuid4().hex}"
        return await self._subscribe_one(
            topic, handler, name, group is None, concurrency, None, (), codec
        )

    def _rescheduler(self, retry_topic: str) -> Callable[[Event, float], Awaitable[None]]:
        async def reschedule(event: Event, delay: float) -> None:
            await self.publish_later(retry_topic, [event], self._now() + delay)

        return reschedule

    async def _follow(
        self,
        pattern: TopicPattern,
        group: str,
        policy: FailurePolicy | None,
        open_topic: Callable[[str, bool], Any],
    ) -> Subscription:
        dlq_of = (policy or RedeliverPolicy()).dlq_topic_for
        subscription = PatternSubscription(
            pattern=pattern,
            group=group,
            list_topics=self._list_topics,
            open_topic=open_topic,
            refresh=self.pattern_refresh,
            excluded=lambda name: name == dlq_of(name),  # a dlq_topic shared by every topic
            report=lambda where, error: self.observer.error(
                pattern.text, adapter=self.adapter, where=where, error=error
            ),
            on_closed=self._forget,
        )
        self._topic_watchers.add(subscription.topics_changed)
        self._subscriptions.add(subscription)
        try:
            await subscription.start()
        except BaseException:
            await subscription.close()
            raise
        return subscription

    def _handler_threads(self) -> ThreadPoolExecutor:
        """The bounded pool plain-function handlers run in, made on first use."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max_workers=HANDLER_THREADS, thread_name_prefix=f"dotmac-{self.adapter}-handler"
            )
        return self._threads

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if isinstance(subscription, PatternSubscription):
            self._topic_watchers.discard(subscription.topics_changed)

    def read_records(
        self,
        topic: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
        follow: bool = False,
    ) -> AsyncGenerator[ReadRecord, None]:
        """See :meth:`EventBus.read_records`; the work is in ``engine/reading.py``."""
        self._check_not_closing()
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("topic", f"must be a non-empty str, got {topic!r}")
        start, stop = check_bounds(since, until, limit, follow)
        records = self._read_log(topic, since=start, until=stop, limit=limit, follow=follow)
        return decoded_records(
            topic, records, self.codec, limit=limit, until=stop, stopped=lambda: self._closing
        )

    async def replay(
        self,
        topic: str,
        handler: EventHandler,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
    ) -> int:
        """See :meth:`EventBus.replay`."""
        events = self.read(topic, since=since, until=until, limit=limit)
        return await replay_events(events, handler, self._handler_threads)

    async def request(self, topic: str, payload: Any, *, timeout: float = 5.0) -> Any:
        self._check_not_closing()
        inbox = await self._reply_inbox()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = future
        try:
            await self.publish(
                Event(
                    topic,
                    payload,
                    headers={REPLY_TO_HEADER: inbox},
                    metadata=EventMetadata(correlation_id=correlation_id),
                )
            )
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise RequestTimeout(f"no reply on {topic!r} within {timeout}s") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                raise BusClosedError(
                    f"{self.adapter} bus closed before {topic!r} replied"
                ) from None
            raise
        finally:
            self._replies.pop(correlation_id, None)

    async def _reply_inbox(self) -> str:
        if self._inbox is not None:
            return self._inbox
        if self._inbox_lock is None:
            self._inbox_lock = asyncio.Lock()
        async with self._inbox_lock:
            if self._inbox is None:
                inbox = f"_inbox.{uuid.uuid4().hex}"
                private = f"private-{uuid.uuid4().hex}"  # no user middleware on replies
                await self._subscribe_one(inbox, self._on_reply, private, True, 4, None, ())
                self._inbox = inbox
        return self._inbox

    async def _on_reply(self, event: Event) -> None:
        correlation_id = event.metadata.correlation_id if event.metadata else None
        future = self._replies.pop(correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(event.payload)

    async def close(self, timeout: float | None = None) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._close_task)

    async def _close(self, timeout: float | None) -> None:
        # Handlers still running may publish (their own events, replies, dead letters) until
        # every subscription has closed; only then does publishing stop.
        self._closing = True
        for future in self._replies.values():
            future.cancel()
        subscriptions = list(self._subscriptions)
        await asyncio.gather(*(s.close(timeout) for s in subscriptions))
        self._closed = True
        if self._inbox is not None:
            try:
                await self._drop_topic(self._inbox)
            except Exception as exc:  # closing goes on; the inbox is only garbage now
                self.observer.error(self._inbox, adapter=self.adapter, where="close", error=exc)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        await self._close_transport()
