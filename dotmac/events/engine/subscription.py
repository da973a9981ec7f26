"""The consumer loop every transport shares: fetch, worker lanes, ack batching, redelivery, close.

One fetch task pulls messages from a :class:`~dotmac.events.transport.Receiver` and refills
once at most half of ``capacity`` is held, so each read carries a full batch instead of one
message per freed slot. A fetched batch is handed to ``concurrency`` worker lanes in one step:
messages with a key always go to the same lane (a key's messages are handled in the order
received), keyless ones to a shared queue any idle worker takes from. Handled messages are
acked in batches: with the next fetch, or by the flush task while a fetch waits. A failed message
stays unacked, waits out its backoff, and is delivered again through ``Receiver.redeliver``
(which raises its delivery count), or is dead-lettered per the policy.

What happens to one message (decode, middleware, the handler, dead letters, replies) is
:class:`~dotmac.events.engine.handling.MessageHandling`; this module owns only the flow.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import EventHandler, Subscription
from dotmac.events.codec import Codec
from dotmac.events.engine.handling import MessageHandling, report_error
from dotmac.events.event import Event
from dotmac.events.middleware import ConsumeMiddleware
from dotmac.events.observability.observer import Observer
from dotmac.events.policy import FailurePolicy
from dotmac.events.transport import Delivery, Receiver, RecordWriter

__all__ = ["ReceiverSubscription"]

logger = logging.getLogger("dotmac.events")

_FETCH_ERROR_BACKOFF = ExponentialBackoff(base_ms=50, max_ms=5_000)
_CANCEL_GRACE = 1.0  # seconds close() waits for cancelled tasks to finish
_ACK_FLUSH_DELAY = 0.005  # seconds a finished message may wait for a read to carry its ack


class ReceiverSubscription(Subscription):
    """A running subscription over one Receiver. Created by ``TransportBus.subscribe``."""

    def __init__(
        self,
        *,
        receiver: Receiver,
        topic: str,
        group: str,
        adapter: str,
        handler: EventHandler,
        concurrency: int,
        capacity: int,
        policy: FailurePolicy,
        codec: Codec,
        observer: Observer,
        publish: Callable[[Event], Awaitable[None]],
        close_timeout: float,
        on_closed: Callable[[Subscription], None],
        middleware: Sequence[ConsumeMiddleware] = (),
        reschedule: Callable[[Event, float], Awaitable[None]] | None = None,
        send_raw: RecordWriter | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self.concurrency = concurrency
        self._adapter = adapter
        self._receiver = receiver
        self._observer = observer
        self._policy = policy
        self._close_timeout = close_timeout
        self._on_closed = on_closed
        self._capacity = max(capacity, concurrency)
        self._refill_at = self._capacity - max(1, self._capacity // 2)
        self._handling = MessageHandling(
            topic=topic,
            group=group,
            adapter=adapter,
            handler=handler,
            codec=codec,
            observer=observer,
            policy=policy,
            publish=publish,
            ack=self._ack,
            retry_later=self._retry_later,
            report=self._report,
            middleware=middleware,
            reschedule=reschedule,
            send_raw=send_raw,
            stopping=self._stop_requested,
        )
        self._lanes: list[deque[Delivery]] = [deque() for _ in range(concurrency)]
        self._shared: deque[Delivery] = deque()  # keyless messages, for any idle worker
        self._wakes: list[asyncio.Event] = []
        self._idle: set[int] = set()
        self._running: list[Delivery | None] = [None] * concurrency
        self._held = 0  # fetched and not yet acked or given back
        self._finished: list[Delivery] = []
        self._waiting: dict[asyncio.Task[None], Delivery] = {}
        self._given_back: list[Delivery] = []  # failed while closing: released by close()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._ack_ready = asyncio.Event()
        self._fetching = False
        self._parked = False
        self._refill_due = False  # a worker yields once so the next read overlaps its work
        self._stopping = False
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dlq_topic(self) -> str:
        """Where this subscription dead-letters (``bus.stats`` counts its depth)."""
        return self._policy.dlq_topic_for(self.topic)

    def start(self) -> None:
        self._wakes = [asyncio.Event() for _ in range(self.concurrency)]
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
            if self._held > self._refill_at:
                self._room.clear()
                self._parked = True  # no read in flight: the flush task sends acks meanwhile
                try:
                    await self._room.wait()
                finally:
                    self._parked = False
                continue
            acks = self._take_finished()
            self._fetching = True
            try:
                batch = await self._receiver.fetch(self._capacity - self._held, acks)
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
            if batch:
                self._held += len(batch)
                self._dispatch(batch)
                if self._idle:  # let idle workers start before the next read is sent (latency)
                    await asyncio.sleep(0)

    def _dispatch(self, batch: Sequence[Delivery]) -> None:
        """Hand a batch to the lanes in one step and wake the workers that got work."""
        if self.concurrency == 1:
            self._lanes[0].extend(batch)
            self._wakes[0].set()
            return
        lanes, shared, count, crc32 = self._lanes, self._shared, self.concurrency, zlib.crc32
        for delivery in batch:
            if delivery.key is None:  # no key, no order to keep
                shared.append(delivery)
            else:
                lanes[crc32(delivery.key.encode()) % count].append(delivery)
        for lane in self._idle:  # a busy worker finds its work when it looks next
            if shared or lanes[lane]:
                self._wakes[lane].set()

    async def _flush_loop(self) -> None:
        """Ship acks while the fetch task is blocked waiting for messages.

        It also stops on ``_stopping``, not only on cancellation: a client library that
        swallows the CancelledError of an ack in flight must not leave close() waiting."""
        while not self._stopping:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            # A read in flight usually returns within a round trip and carries these acks with
            # the next one; only a read left waiting for messages needs a separate XACK.
            await asyncio.sleep(_ACK_FLUSH_DELAY)
            if (self._fetching or self._parked) and self._finished:
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

    def _settle(self) -> None:
        """A message is done with here: count it out, and refill once half the room is free.

        ``held`` only falls one at a time and the fetch loop waits only while it is above
        ``refill_at``, so waking it when ``held`` reaches ``refill_at`` is enough."""
        self._held -= 1
        if self._held == self._refill_at:
            self._room.set()
            self._refill_due = True

    # --- handling ------------------------------------------------------------------------------

    async def _work(self, lane: int) -> None:
        own, shared, wake = self._lanes[lane], self._shared, self._wakes[lane]
        process = self._handling.process
        task = asyncio.current_task()
        while True:
            if own:
                delivery = own.popleft()
            elif shared:
                delivery = shared.popleft()
            elif self._stopping:
                return
            else:
                self._idle.add(lane)
                wake.clear()
                await wake.wait()
                self._idle.discard(lane)
                continue
            self._running[lane] = delivery
            try:
                await process(delivery)
            except Exception as exc:  # an observer or codec bug: keep the message, keep going
                self._report("handle", exc)
                self._retry_later(delivery, self._policy.backoff_delay(delivery.count))
            finally:
                self._running[lane] = None
            if task is not None and task.cancelling() and not self._stop_requested():
                await self._absorb_stray_cancel(task)
            if self._refill_due:  # let the fetch task send its read while this lane works on
                self._refill_due = False
                await asyncio.sleep(0)

    def _stop_requested(self) -> bool:
        """Whether a cancellation reaching a worker is a stop: close() sets ``_stopping`` first,
        and the loop's shutdown cancels every task, the fetch task too. Otherwise it came from
        a handler cancelling its own task."""
        if self._stopping or not self._tasks:
            return True
        fetch = self._tasks[0]
        return fetch.done() or fetch.cancelling() > 0

    async def _absorb_stray_cancel(self, task: asyncio.Task[None]) -> None:
        """A handler called ``cancel()`` on its task and returned before it landed (its message
        is done): take it here, so it neither stops the lane nor fails the next message."""
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self._stop_requested():
                raise
            task.uncancel()

    def _ack(self, delivery: Delivery) -> None:
        finished = self._finished
        finished.append(delivery)
        if len(finished) == 1:  # the flush task needs waking once per batch, not per message
            self._ack_ready.set()
        self._held -= 1
        if self._held == self._refill_at:  # as in _settle, inlined: once per message
            self._room.set()
            self._refill_due = True

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
        except Exception as exc:
            # Give it back so another delivery (here or in another consumer) picks it up; a
            # receiver still holding it would keep it from being claimed.
            self._report("redeliver", exc)
            fresh = None
            try:
                await self._receiver.release([delivery])
            except Exception as again:  # it stays unacked on the broker; claims find it
                self._report("release", again)
        finally:
            self._waiting.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        if fresh is None or self._stopping:
            if fresh is not None:
                await self._receiver.release([fresh])
            self._settle()
            return
        fresh.first_failure_at = delivery.first_failure_at
        fresh.dead_letter_due = delivery.dead_letter_due
        self._dispatch([fresh])

    def _report(self, where: str, error: BaseException) -> None:
        report_error(self._observer, self._adapter, self.topic, self.group, where, error)

    # --- closing -------------------------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(timeout))
        await asyncio.shield(self._close_task)

    async def _close(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._close_timeout if timeout is None else timeout)
        self._stopping = True
        self._room.set()  # a fetch loop waiting for room must see _stopping now
        self._receiver.interrupt()
        fetch_task, flush_task = self._tasks
        await asyncio.wait([fetch_task], timeout=max(deadline - loop.time(), 0))
        fetch_task.cancel()
        flush_task.cancel()
        self._ack_ready.set()  # a flush loop whose cancellation was swallowed sees _stopping
        unhandled: list[Delivery] = []
        for task, delivery in list(self._waiting.items()):
            task.cancel()
            unhandled.append(delivery)
        self._waiting.clear()
        for queue in (*self._lanes, self._shared):
            unhandled.extend(queue)
            queue.clear()
        for wake in self._wakes:
            wake.set()
        _, late = await asyncio.wait(self._workers, timeout=max(deadline - loop.time(), 0))
        for lane, worker in enumerate(self._workers):
            if worker in late:
                interrupted = self._running[lane]
                worker.cancel()
                if interrupted is not None:
                    unhandled.append(interrupted)
        # A handler that swallows its cancellation must not hold close() past a short grace;
        # its delivery is already counted as unhandled and goes back unacked.
        await asyncio.wait([*self._workers, fetch_task, flush_task], timeout=_CANCEL_GRACE)
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
            self._on_closed(self)
