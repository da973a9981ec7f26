"""The consumer engine every transport shares: fetch, worker pool, ack batching, redelivery, close.

One fetch task pulls messages from a :class:`~dotmac.events.transport.Receiver` while fewer than
``capacity`` are held. Each message goes to one of ``concurrency`` worker lanes; messages with the
same key always go to the same lane, so a key's messages are handled in the order received.
Handled messages are acked in batches: with the next fetch, or by the flush task while a fetch
waits. A failed message stays unacked, waits out its backoff, and is delivered again through
``Receiver.redeliver`` (which raises its delivery count), or is dead-lettered per the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import EventHandler, Subscription
from dotmac.events.dlq import DLQEntry
from dotmac.events.errors import DecodeError, HandlerTimeout, RetriesExhausted
from dotmac.events.event import DeliveryInfo, Event, EventMetadata
from dotmac.events.policy import FailurePolicy

if TYPE_CHECKING:
    from dotmac.events.transport import Delivery, Receiver, TransportBus

__all__ = ["ReceiverSubscription"]

logger = logging.getLogger("dotmac.events")

_FETCH_ERROR_BACKOFF = ExponentialBackoff(base_ms=50, max_ms=5_000)
_STOP: Any = object()


def _being_cancelled() -> bool:
    """True when this task was cancelled, False for a CancelledError a handler raised itself."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class ReceiverSubscription(Subscription):
    """A running subscription over one Receiver. Created by ``TransportBus.subscribe``."""

    def __init__(
        self,
        *,
        bus: TransportBus,
        receiver: Receiver,
        topic: str,
        group: str,
        handler: EventHandler,
        concurrency: int,
        capacity: int,
        policy: FailurePolicy,
    ) -> None:
        self.topic = topic
        self.group = group
        self.concurrency = concurrency
        self._bus = bus
        self._receiver = receiver
        self._handler = handler
        self._policy = policy
        self._capacity = max(capacity, concurrency)
        self._lanes: list[asyncio.Queue[Delivery]] = []
        self._running: list[Delivery | None] = [None] * concurrency
        self._round_robin = itertools.cycle(range(concurrency))
        self._held = 0  # fetched and not yet acked or given back
        self._finished: list[Delivery] = []
        self._waiting: dict[asyncio.Task[None], Delivery] = {}
        self._given_back: list[Delivery] = []  # failed while closing: released by close()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._ack_ready = asyncio.Event()
        self._fetching = False
        self._stopping = False
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        self._lanes = [asyncio.Queue() for _ in range(self.concurrency)]
        self._workers = [
            asyncio.create_task(self._work(i), name=f"dotmac-worker-{self.topic}-{i}")
            for i in range(self.concurrency)
        ]
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name=f"dotmac-fetch-{self.topic}"),
            asyncio.create_task(self._flush_loop(), name=f"dotmac-ack-{self.topic}"),
        ]

    # --- fetching and routing ----------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping:
            room = self._capacity - self._held
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            acks = self._take_finished()
            self._fetching = True
            try:
                batch = await self._receiver.fetch(room, acks)
            except asyncio.CancelledError:  # close() gave up on this fetch: it acks them
                self._finished[:0] = acks
                raise
            except Exception as exc:
                self._finished[:0] = acks  # acking twice is harmless; losing an ack is not
                failures += 1
                self._report("fetch", exc)
                await asyncio.sleep(_FETCH_ERROR_BACKOFF.delay(failures))
                continue
            finally:
                self._fetching = False
            failures = 0
            for delivery in batch:
                self._held += 1
                self._route(delivery)

    def _route(self, delivery: Delivery) -> None:
        if delivery.key is not None:
            lane = zlib.crc32(delivery.key.encode()) % self.concurrency
        elif self.concurrency == 1:
            lane = 0
        else:  # no key, no order to keep: the least busy lane, counting what it runs now
            lane = min(range(self.concurrency), key=self._load)
        self._lanes[lane].put_nowait(delivery)

    def _load(self, lane: int) -> int:
        return self._lanes[lane].qsize() + (self._running[lane] is not None)

    async def _flush_loop(self) -> None:
        """Ship acks while the fetch task is blocked waiting for messages."""
        while True:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            await asyncio.sleep(0)  # give the fetch loop the first chance to piggyback them
            if self._fetching and self._finished:
                acks = self._take_finished()
                try:
                    await self._receiver.ack(acks)
                except asyncio.CancelledError:  # close() cancelled us: it acks them
                    self._finished[:0] = acks
                    raise
                except Exception as exc:
                    self._finished[:0] = acks
                    self._report("ack", exc)

    def _take_finished(self) -> list[Delivery]:
        acks, self._finished = self._finished, []
        return acks

    def _settle(self, delivery: Delivery) -> None:
        """The message is done with here: count it out and make room for more."""
        self._held -= 1
        self._room.set()

    # --- handling ------------------------------------------------------------------------------

    async def _work(self, lane: int) -> None:
        queue = self._lanes[lane]
        while True:
            delivery = await queue.get()
            if delivery is _STOP:
                return
            self._running[lane] = delivery
            try:
                await self._process(delivery)
            except Exception as exc:  # an observer or codec bug: keep the message, keep going
                self._report("handle", exc)
                self._retry_later(delivery, self._policy.backoff_delay(delivery.count))
            finally:
                self._running[lane] = None

    async def _process(self, delivery: Delivery) -> None:
        bus = self._bus
        if delivery.unreadable is not None:
            await self._dead_letter(delivery, None, DecodeError(delivery.unreadable))
            return
        try:
            event = bus.codec.decode(delivery.data)
        except DecodeError as exc:
            await self._dead_letter(delivery, None, exc)
            return
        if delivery.dead_letter_due is not None:  # its dead-letter publish failed: only retry that
            error, attempts = delivery.dead_letter_due
            await self._dead_letter(delivery, event, error, attempts)
            return
        if self._policy.retry_budget_spent(delivery.count):
            # Earlier deliveries used every attempt, and the consumer holding the last one died
            # before dead-lettering it: dead-letter now instead of calling the handler again.
            spent = RetriesExhausted(
                f"all {delivery.count - 1} attempts failed in earlier deliveries"
            )
            await self._dead_letter(delivery, event, spent, delivery.count - 1)
            return
        event._received(
            DeliveryInfo(
                count=delivery.count,
                group=self.group,
                message_id=delivery.message_id,
                partition=delivery.partition,
                offset=delivery.offset,
                first_failure_at=delivery.first_failure_at,
            )
        )
        try:
            with bus.observer.consuming(event, group=self.group, adapter=bus.adapter):
                result = await self._call(event)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise  # close() is stopping this worker
            delay = self._policy.retry_delay(exc, delivery.count)
            if delay is None:
                await self._dead_letter(delivery, event, exc)
            else:
                self._retry_later(delivery, delay)
                with self._observing("retried"):
                    bus.observer.retried(
                        event,
                        group=self.group,
                        adapter=bus.adapter,
                        attempt=delivery.count,
                        delay=delay,
                        error=exc,
                    )
            return
        reply_to = event.headers.get("dotmac-reply-to")
        if reply_to is not None:
            await self._reply(event, reply_to, result)
        self._ack(delivery)

    async def _call(self, event: Event) -> Any:
        timeout = self._policy.handler_timeout
        if timeout is None:
            return await self._handler(event)
        try:
            async with asyncio.timeout(timeout):
                return await self._handler(event)
        except TimeoutError as exc:
            raise HandlerTimeout(f"handler for {self.topic!r} ran past {timeout}s") from exc

    def _ack(self, delivery: Delivery) -> None:
        self._finished.append(delivery)
        self._ack_ready.set()
        self._settle(delivery)

    async def _dead_letter(
        self,
        delivery: Delivery,
        event: Event | None,
        error: BaseException,
        attempts: int | None = None,
    ) -> None:
        """Publish a DLQEntry, and only then ack; if that publish fails, try again later
        (publishing only, without calling the handler again)."""
        bus = self._bus
        attempts = delivery.count if attempts is None else attempts
        dlq_topic = self._policy.dlq_topic_for(self.topic)
        entry = DLQEntry.for_failure(
            topic=self.topic,
            group=self.group,
            data=delivery.data,
            error=error,
            attempts=attempts,
            first_failure_at=delivery.first_failure_at,
            event=event,
            key=delivery.key,
        )
        try:
            await bus.publish(entry.to_event(dlq_topic))
        except Exception as exc:
            self._report("dead-letter", exc)
            delivery.dead_letter_due = (error, attempts)
            self._retry_later(delivery, self._policy.backoff_delay(delivery.count))
            return
        self._ack(delivery)
        with self._observing("dead_lettered"):
            bus.observer.dead_lettered(
                self.topic,
                group=self.group,
                adapter=bus.adapter,
                dlq_topic=dlq_topic,
                attempts=attempts,
                error=error,
                event=event,
            )

    async def _reply(self, event: Event, reply_to: str, result: Any) -> None:
        correlation_id = event.metadata.correlation_id if event.metadata else None
        reply = Event(reply_to, result, metadata=EventMetadata(correlation_id=correlation_id))
        try:
            await self._bus.publish(reply)
        except Exception as exc:  # the handler succeeded; the requester times out
            self._report("reply", exc)

    def _retry_later(self, delivery: Delivery, delay: float) -> None:
        if delivery.first_failure_at is None:
            delivery.first_failure_at = datetime.now(UTC)
        if self._stopping:  # no timer that would outlive close(); close() releases it
            self._given_back.append(delivery)
            return
        task = asyncio.create_task(self._redeliver_after(delivery, delay))
        self._waiting[task] = delivery

    async def _redeliver_after(self, delivery: Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            fresh = await self._receiver.redeliver(delivery)
        except Exception as exc:  # it stays unacked on the broker; recovery will find it
            self._report("redeliver", exc)
            fresh = None
        finally:
            self._waiting.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        if fresh is None or self._stopping:
            if fresh is not None:
                await self._receiver.release([fresh])
            self._settle(delivery)
            return
        fresh.first_failure_at = delivery.first_failure_at
        fresh.dead_letter_due = delivery.dead_letter_due
        self._route(fresh)

    def _report(self, where: str, error: BaseException) -> None:
        logger.warning(
            "%s bus, topic %s, group %s: %s failed: %r",
            self._bus.adapter,
            self.topic,
            self.group,
            where,
            error,
        )
        with self._observing("error"):
            self._bus.observer.error(
                self.topic, adapter=self._bus.adapter, where=where, error=error
            )

    @contextlib.contextmanager
    def _observing(self, hook: str) -> Iterator[None]:
        """Observers must not raise; one that does is logged, and never costs a message."""
        try:
            yield
        except Exception:
            logger.exception("observer hook %s failed on topic %s", hook, self.topic)

    # --- closing -------------------------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(timeout))
        await asyncio.shield(self._close_task)

    async def _close(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._bus.close_timeout if timeout is None else timeout)
        self._stopping = True
        self._room.set()  # a fetch loop waiting for room must see _stopping now
        self._receiver.interrupt()
        fetch_task, flush_task = self._tasks
        await asyncio.wait([fetch_task], timeout=max(deadline - loop.time(), 0))
        fetch_task.cancel()
        flush_task.cancel()
        unhandled: list[Delivery] = []
        for task, delivery in list(self._waiting.items()):
            task.cancel()
            unhandled.append(delivery)
        self._waiting.clear()
        for queue in self._lanes:
            while not queue.empty():
                unhandled.append(queue.get_nowait())
            queue.put_nowait(_STOP)
        _, late = await asyncio.wait(self._workers, timeout=max(deadline - loop.time(), 0))
        for lane, worker in enumerate(self._workers):
            if worker in late:
                interrupted = self._running[lane]
                worker.cancel()
                if interrupted is not None:
                    unhandled.append(interrupted)
        await asyncio.gather(*self._workers, fetch_task, flush_task, return_exceptions=True)
        unhandled.extend(self._given_back)
        try:
            acks = self._take_finished()
            if acks:
                await self._receiver.ack(acks)
            if unhandled:
                await self._receiver.release(unhandled)
        except Exception as exc:
            self._report("close", exc)
        finally:
            await self._receiver.close()
            self._closed = True
            self._bus._forget(self)
