"""SubscribingBus: the subscribe side of the engine, once for every transport.

``subscribe`` (one topic, a list, or a pattern), non-blocking retry topics, ``subscribe_batch``
and the thread pool for plain ``def`` handlers, over a transport's ``_open_receiver``. The flow
of one subscription is :mod:`~dotmac.events.engine.subscription` (or ``batching``, or
``patterns`` for a pattern); this module wires them up.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dotmac.events.bus import EventHandler, Subscription, SubscriptionSet
from dotmac.events.codec import Codec
from dotmac.events.engine.batching import BatchHandler, BatchSubscription
from dotmac.events.engine.calling import is_async_callable, make_awaitable
from dotmac.events.engine.patterns import PatternSubscription
from dotmac.events.engine.publishing import MAX_EVENT_BYTES, PublishingBus
from dotmac.events.engine.subscription import ReceiverSubscription
from dotmac.events.errors import (
    BusClosedError,
    ConfigurationError,
    UnsupportedOperation,
)
from dotmac.events.event import Event
from dotmac.events.middleware import ConsumeMiddleware
from dotmac.events.observability.observer import Observer
from dotmac.events.patterns import TopicPattern, is_pattern
from dotmac.events.policy import FailurePolicy, RedeliverPolicy
from dotmac.events.registry import topic_list
from dotmac.events.schemas import SchemaCodec, typed_handler
from dotmac.events.transport import Receiver

__all__ = ["HANDLER_THREADS", "SubscribingBus", "retry_topic"]

HANDLER_THREADS = 16
"""Threads a bus runs plain-function (``def``) handlers in, at most, across its subscriptions."""


def retry_topic(group: str, topic: str) -> str:
    """Where ``group``'s non-blocking retries of ``topic`` wait (an internal topic: patterns
    never match it)."""
    return f"_retry.{group}.{topic}"


class SubscribingBus(PublishingBus):
    """The subscribe paths of :class:`~dotmac.events.engine.TransportBus`."""

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
        super().__init__(codec=codec, observer=observer, max_event_bytes=max_event_bytes)
        self.close_timeout = close_timeout
        self._middleware: list[ConsumeMiddleware] = []
        self._threads: ThreadPoolExecutor | None = None
        self._subscriptions: set[Subscription] = set()
        self._topic_watchers: set[Callable[[], None]] = set()

    @abc.abstractmethod
    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int, from_beginning: bool = False
    ) -> Receiver:
        """Join ``group`` on ``topic`` (creating it if needed) and return its receiver.

        A transport that implements ``_list_topics`` (so it can follow patterns) also takes
        ``from_beginning=True``: a group that does not exist yet, private or named, starts at
        the beginning of the topic instead of where it would otherwise.
        """

    def _prefetch(self, concurrency: int) -> int:
        """How many messages a subscription may hold at once (fetched but not acked)."""
        return max(100, 2 * concurrency)

    async def _list_topics(self) -> Iterable[str]:
        """Every topic name the broker holds now (pattern subscriptions match against them)."""
        raise UnsupportedOperation(
            f"the {self.adapter} transport cannot list its topics, so it cannot follow a pattern"
        )

    def _topic_appeared(self) -> None:
        """Tell pattern subscriptions to look for new topics now, not at the next refresh."""
        for changed in list(self._topic_watchers):
            changed()

    def add_middleware(self, middleware: ConsumeMiddleware) -> None:
        """Wrap every handler call of subscriptions made from now on (outermost first)."""
        if not callable(middleware):
            raise ConfigurationError("middleware", f"must be callable, got {middleware!r}")
        self._middleware.append(middleware)

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

        return await self._open_all(topics, patterns, group_name, policy, open_topic)

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

        return await self._open_all(topics, patterns, group_name, policy, open_topic)

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

    async def _open_all(
        self,
        topics: Sequence[str],
        patterns: Mapping[str, TopicPattern],
        group: str,
        policy: FailurePolicy | None,
        open_topic: Callable[[str, bool], Any],
    ) -> Subscription:
        """One subscription per topic (a followed pattern for a glob), as one; if any fails to
        open, those already open are closed."""
        subscriptions: list[Subscription] = []
        try:
            for name in topics:
                if name in patterns:
                    one = await self._follow(patterns[name], group, policy, open_topic)
                else:
                    one = await open_topic(name, False)
                subscriptions.append(one)
        except BaseException:
            await asyncio.gather(*(s.close() for s in subscriptions), return_exceptions=True)
            raise
        return subscriptions[0] if len(subscriptions) == 1 else SubscriptionSet(subscriptions)

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
