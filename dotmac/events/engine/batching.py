"""Batch subscriptions: the handler receives a list of events, acked together after success.

A fetch task keeps up to two batches read ahead (native batch reads: one XREADGROUP or one
Kafka fetch returns many); the batch task takes what is there once ``max_batch_size`` events
are waiting or ``max_wait`` has passed since the first one, and calls the handler with them in
the order received. One batch runs at a time, so a key's events are handled in order.

Outcomes, per batch:

- the handler returns: every event is acked (one ack call for the batch);
- it raises :class:`~dotmac.events.errors.BatchFailed` naming some events: the others are
  acked, and only the named ones are retried (or dead-lettered per the policy);
- it raises anything else: the whole batch is retried.

Retries are blocking: the failed events wait out their backoff and are delivered again (their
counts raised) as the head of the next batch, before any new event; a message the policy gives
up on is dead-lettered alone with the error. Events that cannot be decoded never reach the
handler: each is dead-lettered as a DecodeError. Per-event middleware and observer spans do not
apply to batch handlers; retries and dead letters are reported as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import Subscription
from dotmac.events.codec import Codec
from dotmac.events.engine.handling import MessageHandling, observing, report_error
from dotmac.events.errors import BatchFailed, DecodeError
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer
from dotmac.events.policy import FailurePolicy
from dotmac.events.transport import Delivery, Receiver, RecordWriter

__all__ = ["BatchHandler", "BatchSubscription"]

logger = logging.getLogger("dotmac.events")

BatchHandler = Callable[[list[Event]], Awaitable[Any]]

_FETCH_ERROR_BACKOFF = ExponentialBackoff(base_ms=50, max_ms=5_000)


async def _never(event: Event) -> None:  # MessageHandling here only decodes and dead-letters
    raise AssertionError("a batch subscription calls its handler with lists")


class BatchSubscription(Subscription):
    """A running batch subscription over one Receiver. Created by ``subscribe_batch``."""

    def __init__(
        self,
        *,
        receiver: Receiver,
        topic: str,
        group: str,
        adapter: str,
        handler: BatchHandler,
        max_batch_size: int,
        max_wait: float,
        policy: FailurePolicy,
        codec: Codec,
        observer: Observer,
        publish: Callable[[Event], Awaitable[None]],
        close_timeout: float,
        on_closed: Callable[[Subscription], None],
        send_raw: RecordWriter | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self._adapter = adapter
        self._receiver = receiver
        self._handler = handler
        self._max = max_batch_size
        self._max_wait = max_wait
        self._policy = policy
        self._decode = codec.decode
        self._observer = observer
        self._close_timeout = close_timeout
        self._on_closed = on_closed
        self._handling = MessageHandling(
            topic=topic,
            group=group,
            adapter=adapter,
            handler=_never,
            codec=codec,
            observer=observer,
            policy=policy,
            publish=publish,
            ack=self._done,
            retry_later=self._retry_later,
            report=self._report,
            send_raw=send_raw,
        )
        self._ready: deque[Delivery] = deque()  # fetched, not yet in a batch
        self._retries: list[Delivery] = []  # failed, redelivered first after ``_retry_at``
        self._retry_at = 0.0
        self._acks: list[Delivery] = []
        self._in_flight: list[Delivery] = []  # the batch the handler has now
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._close_task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name=f"dotmac-batch-fetch-{self.topic}"),
            asyncio.create_task(self._batch_loop(), name=f"dotmac-batch-{self.topic}"),
        ]

    # --- reading ahead ---------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping:
            room = 2 * self._max - len(self._ready)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                got = await self._receiver.fetch(room, ())
            except Exception as exc:
                failures += 1
                self._report("fetch", exc)
                await asyncio.sleep(_FETCH_ERROR_BACKOFF.delay(failures))
                continue
            failures = 0
            if got:
                self._ready.extend(got)
                self._arrived.set()

    # --- batches -------------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._retries:
                wait = self._retry_at - loop.time()
                if wait > 0:
                    await self._sleep(wait)
                    continue
                batch = await self._redelivered()
            else:
                batch = []
            if not batch:
                batch = await self._next_batch(loop)
            if batch and not self._stopping:
                await self._run(batch)
            elif batch:  # taken while closing: close() gives them back
                self._ready.extendleft(reversed(batch))

    async def _sleep(self, seconds: float) -> None:
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._stopping:
                    await self._arrived.wait()
                    self._arrived.clear()

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[Delivery]:
        while not self._ready and not self._stopping:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = loop.time() + self._max_wait
        while len(self._ready) < self._max and not self._stopping:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()
        count = min(self._max, len(self._ready))
        batch = [self._ready.popleft() for _ in range(count)]
        self._room.set()
        return batch

    async def _redelivered(self) -> list[Delivery]:
        retries, self._retries = self._retries, []
        fresh: list[Delivery] = []
        for delivery in retries:
            try:
                again = await self._receiver.redeliver(delivery)
            except Exception as exc:  # give it back so a claim or rebalance delivers it again
                self._report("redeliver", exc)
                with contextlib.suppress(Exception):
                    await self._receiver.release([delivery])
                continue
            if again is not None:
                again.first_failure_at = delivery.first_failure_at
                again.dead_letter_due = delivery.dead_letter_due
                fresh.append(again)
        return fresh

    async def _run(self, batch: list[Delivery]) -> None:
        self._in_flight = batch
        try:
            await self._handle(batch)
        finally:
            self._in_flight = []

    async def _handle(self, batch: list[Delivery]) -> None:
        events: list[Event] = []
        held: dict[int, Delivery] = {}
        for delivery in batch:
            event = await self._readable(delivery)
            if event is not None:
                events.append(event)
                held[id(event)] = delivery
        if events:
            try:
                await self._handler(events)
            except BatchFailed as exc:
                failed = {id(e) for e in exc.events if id(e) in held}
                named = {e.id for e in exc.events}
                for event in events:
                    delivery = held[id(event)]
                    if id(event) in failed or (not failed and event.id in named):
                        await self._failed(delivery, event, exc.error)
                    else:
                        self._done(delivery)
            except Exception as exc:
                for event in events:
                    await self._failed(held[id(event)], event, exc)
            else:
                self._acks.extend(held.values())
        await self._ack()

    async def _readable(self, delivery: Delivery) -> Event | None:
        """The delivery's event, or None after dead-lettering what cannot be handled."""
        if delivery.unreadable is not None:
            await self._handling.dead_letter(delivery, None, DecodeError(delivery.unreadable))
            return None
        try:
            event = self._decode(delivery.data)
        except DecodeError as exc:
            await self._handling.dead_letter(delivery, None, exc)
            return None
        if delivery.headers or event.topic != self.topic:
            event = self._handling.as_received(delivery, event)
        if delivery.dead_letter_due is not None:
            error, attempts = delivery.dead_letter_due
            await self._handling.dead_letter(delivery, event, error, attempts)
            return None
        event._received(
            delivery.count,
            self.group,
            delivery.message_id,
            delivery.partition,
            delivery.offset,
            delivery.first_failure_at,
        )
        return event

    async def _failed(self, delivery: Delivery, event: Event, error: BaseException) -> None:
        delay = self._policy.retry_delay(error, delivery.count)
        if delay is None:
            await self._handling.dead_letter(delivery, event, error)
            return
        self._retry_later(delivery, delay)
        with observing("retried", self.topic):
            self._observer.retried(
                event,
                group=self.group,
                adapter=self._adapter,
                attempt=delivery.count,
                delay=delay,
                error=error,
            )

    def _retry_later(self, delivery: Delivery, delay: float) -> None:
        if delivery.first_failure_at is None:
            delivery.first_failure_at = datetime.now(UTC)
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        self._retry_at = due if not self._retries else max(self._retry_at, due)
        self._retries.append(delivery)

    def _done(self, delivery: Delivery) -> None:
        self._acks.append(delivery)

    async def _ack(self) -> None:
        acks, self._acks = self._acks, []
        if not acks:
            return
        try:
            await self._receiver.ack(acks)
        except Exception as exc:  # kept for the next try; acking twice is harmless
            self._acks[:0] = acks
            self._report("ack", exc)

    def _report(self, where: str, error: BaseException) -> None:
        report_error(self._observer, self._adapter, self.topic, self.group, where, error)

    # --- closing -------------------------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(timeout))
        await asyncio.shield(self._close_task)

    async def _close(self, timeout: float | None) -> None:
        self._stopping = True
        self._receiver.interrupt()
        self._arrived.set()
        self._room.set()
        fetch_task, batch_task = self._tasks
        limit = self._close_timeout if timeout is None else timeout
        _, late = await asyncio.wait([batch_task], timeout=limit)  # the running batch finishes
        interrupted = bool(late)
        for task in (fetch_task, batch_task):
            task.cancel()
        await asyncio.wait([fetch_task, batch_task], timeout=1.0)
        if interrupted:
            done = {id(d) for d in self._acks}
            self._retries.extend(d for d in self._in_flight if id(d) not in done)
            logger.warning(
                "%s bus, topic %s, group %s: a batch handler ran past the close timeout; "
                "its events stay unacknowledged",
                self._adapter,
                self.topic,
                self.group,
            )
        try:
            await self._ack()
            unhandled = [*self._ready, *self._retries]
            self._ready.clear()
            self._retries.clear()
            if unhandled:
                await self._receiver.release(unhandled)
        except Exception as exc:
            self._report("close", exc)
        finally:
            await self._receiver.close()
            self._closed = True
            self._on_closed(self)
