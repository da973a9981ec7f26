"""TransportBus: the EventBus contract run once over any transport's ``_send`` and receivers.

An adapter subclasses it and supplies ``_send`` (bytes to the broker) and ``_open_receiver`` (a
:class:`~dotmac.events.transport.Receiver` per subscription), plus ``health`` and ``stats``.
The publish side is :mod:`~dotmac.events.engine.publishing`, the subscribe side
:mod:`~dotmac.events.engine.subscribing`; this module adds topic listing, reading the log,
request-reply and close.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from dotmac.events.bus import EventHandler, ReadRecord
from dotmac.events.codec import Codec
from dotmac.events.engine.handling import REPLY_TO_HEADER
from dotmac.events.engine.publishing import MAX_EVENT_BYTES
from dotmac.events.engine.reading import check_bounds, decoded_records, replay_events
from dotmac.events.engine.subscribing import HANDLER_THREADS, SubscribingBus, retry_topic
from dotmac.events.engine.subscription import ReceiverSubscription
from dotmac.events.errors import (
    BusClosedError,
    ConfigurationError,
    RequestTimeout,
    UnsupportedOperation,
)
from dotmac.events.event import Event, EventMetadata
from dotmac.events.observability.observer import Observer
from dotmac.events.patterns import TopicPattern
from dotmac.events.transport import LogRecord

__all__ = ["HANDLER_THREADS", "MAX_EVENT_BYTES", "TransportBus", "retry_topic"]


class TransportBus(SubscribingBus):
    """EventBus contract implemented once over a transport's ``_send`` and ``_open_receiver``."""

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        observer: Observer | None = None,
        close_timeout: float = 10.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        super().__init__(
            codec=codec,
            observer=observer,
            close_timeout=close_timeout,
            max_event_bytes=max_event_bytes,
        )
        self._close_task: asyncio.Future[None] | None = None
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._inbox: str | None = None
        self._inbox_lock: asyncio.Lock | None = None

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
