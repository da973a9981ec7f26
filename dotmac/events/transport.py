"""What a transport implements, and the bus that runs the shared contract on top of it.

A transport only moves bytes: it sends encoded events and hands received messages to a
:class:`Receiver`. Encoding, observers, the worker pool, acknowledgement batching, redelivery
backoff, dead letters and request-reply live above it, once, in :class:`TransportBus` and
:class:`~dotmac.events.subscription.ReceiverSubscription`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from dotmac.events.bus import EventBus, EventHandler, Subscription
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.errors import (
    BusClosedError,
    ConfigurationError,
    EventBusError,
    PublishError,
    RequestTimeout,
)
from dotmac.events.event import Event, EventMetadata
from dotmac.events.observability.observer import NoopObserver, Observer
from dotmac.events.policy import FailurePolicy, RedeliverPolicy

__all__ = ["REPLY_TO_HEADER", "Delivery", "Receiver", "TransportBus"]

REPLY_TO_HEADER = "dotmac-reply-to"
"""Header naming the topic a request's reply goes to."""


@dataclass(slots=True, kw_only=True)
class Delivery:
    """One received message as a transport hands it over: bytes plus what is needed to ack it."""

    data: bytes
    count: int
    message_id: str
    key: str | None = None
    partition: int | None = None
    offset: int | None = None
    token: Any = None
    first_failure_at: datetime | None = None
    dead_letter_due: tuple[BaseException, int] | None = None  # (error, attempts) not yet published
    unreadable: str | None = None  # why the transport could not read it: dead-letter as DecodeError


class Receiver(Protocol):
    """A transport's consumer for one topic and group, driven by ReceiverSubscription.

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


class TransportBus(EventBus):
    """EventBus contract implemented once over a transport's ``_send`` and ``_open_receiver``."""

    adapter = "transport"

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        observer: Observer | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        if close_timeout <= 0:
            raise ConfigurationError("close_timeout", f"must be > 0, got {close_timeout}")
        self.codec: Codec = codec or JsonCodec()
        self.observer: Observer = observer or NoopObserver()
        self.close_timeout = close_timeout
        self._subscriptions: set[Subscription] = set()
        self._closing = False  # no new subscriptions; publishing still works for handlers
        self._closed = False
        self._close_task: asyncio.Future[None] | None = None
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._inbox: str | None = None
        self._inbox_lock: asyncio.Lock | None = None

    # --- what a transport implements -------------------------------------------------------

    @abc.abstractmethod
    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """Send encoded events; return when the broker accepted all of them."""

    @abc.abstractmethod
    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int
    ) -> Receiver:
        """Join ``group`` on ``topic`` (creating it if needed) and return its receiver."""

    async def _close_transport(self) -> None:
        """Release connections once every subscription is closed."""

    async def _drop_topic(self, topic: str) -> None:
        """Delete a topic this bus created for itself (its request-reply inbox) at close."""

    def _prefetch(self, concurrency: int) -> int:
        """How many messages a subscription may hold at once (fetched but not acked)."""
        return max(10, 2 * concurrency)

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

    async def publish(self, event: Event) -> None:
        self._check_open()
        with self.observer.publishing(event, adapter=self.adapter) as extra:
            if extra:
                event = event.with_headers(extra)
            await self._send_translated([(event, self.codec.encode(event))])

    async def publish_many(self, events: Sequence[Event]) -> None:
        self._check_open()
        if not events:
            return
        with contextlib.ExitStack() as stack:
            batch = []
            for event in events:
                extra = stack.enter_context(self.observer.publishing(event, adapter=self.adapter))
                ready = event.with_headers(extra) if extra else event
                batch.append((ready, self.codec.encode(ready)))
            await self._send_translated(batch)

    async def _send_translated(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        try:
            await self._send(batch)
        except EventBusError:
            raise
        except Exception as exc:  # a transport bug must still surface as our error
            raise PublishError(f"{self.adapter}: publish failed: {exc!r}") from exc

    async def subscribe(
        self,
        topic: str,
        handler: EventHandler,
        *,
        group: str | None = None,
        concurrency: int = 1,
        policy: FailurePolicy | None = None,
    ) -> Subscription:
        """See :meth:`EventBus.subscribe`. ``policy`` decides retry delays and dead-lettering
        (run_consumer passes its ConsumerOptions); the default redelivers with backoff forever."""
        from dotmac.events.subscription import ReceiverSubscription

        self._check_not_closing()
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("topic", f"must be a non-empty str, got {topic!r}")
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigurationError("group", f"must be a non-empty str or None, got {group!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError("concurrency", f"must be an int >= 1, got {concurrency!r}")
        private = group is None
        group_name = group or f"private-{uuid.uuid4().hex}"
        prefetch = self._prefetch(concurrency)
        receiver = await self._open_receiver(topic, group_name, private=private, prefetch=prefetch)
        subscription = ReceiverSubscription(
            bus=self,
            receiver=receiver,
            topic=topic,
            group=group_name,
            handler=handler,
            concurrency=concurrency,
            capacity=prefetch,
            policy=policy or RedeliverPolicy(),
        )
        self._subscriptions.add(subscription)
        subscription.start()
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

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
                await self.subscribe(inbox, self._on_reply, concurrency=4)
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
        await self._close_transport()
