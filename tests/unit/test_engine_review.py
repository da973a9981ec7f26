"""Regression tests for the consumer engine and the memory bus: close, cancellation, capacity."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from dotmac.events import (
    BusClosedError,
    ConsumerOptions,
    DLQEntry,
    Event,
    MemoryBus,
    NoopObserver,
    create_dlq_consumer,
    create_memory_bus,
    run_consumer,
)
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.policy import RedeliverPolicy
from dotmac.events.testing import wait_until
from dotmac.events.transport import Delivery, Receiver


async def test_close_at_capacity_does_not_wait_out_its_timeout() -> None:
    """Every held message waits out a long backoff: nothing will free room, close must not wait."""
    bus = create_memory_bus()
    calls = 0

    async def fail(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    options = ConsumerOptions(backoff_base_ms=60_000, backoff_max_delay_ms=60_000, jitter=False)
    subscription = await run_consumer(bus, "t", fail, options, group="g")
    capacity = bus._prefetch(1)
    for i in range(capacity + 2):  # more than the subscription's capacity
        await bus.publish(Event("t", {"i": i}))
    await wait_until(lambda: calls == capacity, 2.0, "the first ones, up to capacity, to fail")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await subscription.close(timeout=3.0)
    assert loop.time() - started < 1.0
    stats = await bus.stats("t", "g")
    assert stats.lag == capacity + 2  # all given back, none acked
    await bus.close()


def _retry_timers() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and "_redeliver_after" in getattr(t.get_coro(), "__qualname__", "")
    ]


async def test_failure_while_closing_leaves_no_retry_timer_behind() -> None:
    bus = create_memory_bus()
    entered = asyncio.Event()
    fail_now = asyncio.Event()

    async def handler(event: Event) -> None:
        if event.delivery_count == 1:
            entered.set()
            await fail_now.wait()
            raise RuntimeError("failed while the subscription closed")

    subscription = await bus.subscribe("t", handler, group="g")
    await bus.publish(Event("t", {"n": 1}))
    await entered.wait()
    closing = asyncio.create_task(subscription.close(timeout=5.0))
    await asyncio.sleep(0.05)
    fail_now.set()
    await closing
    assert _retry_timers() == []
    stats = await bus.stats("t", "g")
    assert stats.lag == 1  # given back to the group, not acked
    await bus.close()


class _SlowAckReceiver:
    """A memory receiver whose standalone ack takes a while, like a network round trip."""

    def __init__(self, inner: Receiver) -> None:
        self._inner = inner

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        return await self._inner.fetch(max_count, acks)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await asyncio.sleep(0.3)
        await self._inner.ack(deliveries)

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        return await self._inner.redeliver(delivery)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self._inner.release(deliveries)

    def interrupt(self) -> None:
        self._inner.interrupt()

    async def close(self) -> None:
        await self._inner.close()


class _SlowAckBus(MemoryBus):
    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int
    ) -> Receiver:
        inner = await super()._open_receiver(topic, group, private=private, prefetch=prefetch)
        return _SlowAckReceiver(inner)


async def test_close_during_an_ack_flush_still_acks_the_handled_message() -> None:
    bus = _SlowAckBus()
    handled = 0

    async def handler(event: Event) -> None:
        nonlocal handled
        handled += 1

    subscription = await bus.subscribe("t", handler, group="g")
    await bus.publish(Event("t", {"n": 1}))
    await wait_until(lambda: handled == 1, 2.0, "the handler")
    await asyncio.sleep(0.05)  # the flush task is now inside its slow ack
    await subscription.close(timeout=5.0)
    stats = await bus.stats("t", "g")
    assert (stats.lag, stats.pending) == (0, 0)  # handled, so acked: not handed out again
    await bus.close()


class _StuckFetchReceiver(_SlowAckReceiver):
    """A receiver whose fetch carrying acks hangs before acking, deaf to interrupt()."""

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        if acks:
            await asyncio.sleep(10)
        return await self._inner.fetch(max_count, acks)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._inner.ack(deliveries)


class _StuckFetchBus(MemoryBus):
    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int
    ) -> Receiver:
        inner = await super()._open_receiver(topic, group, private=private, prefetch=prefetch)
        return _StuckFetchReceiver(inner)


async def test_close_cancelling_a_fetch_still_acks_what_it_carried() -> None:
    bus = _StuckFetchBus()
    gate = asyncio.Event()
    handled = 0

    async def handler(event: Event) -> None:
        nonlocal handled
        await gate.wait()
        handled += 1

    subscription = await bus.subscribe("t", handler, group="g")
    capacity = bus._prefetch(1)
    for i in range(capacity):
        await bus.publish(Event("t", {"i": i}))
    await asyncio.sleep(0.05)  # all held: the fetch loop waits for room
    gate.set()  # acks free room and ride on the next fetch, which hangs
    await wait_until(lambda: handled == capacity, 2.0, "all handled")
    await subscription.close(timeout=0.3)
    stats = await bus.stats("t", "g")
    assert (stats.lag, stats.pending) == (0, 0)
    await bus.close()


async def test_handler_raising_cancelled_error_does_not_kill_its_lane() -> None:
    """A handler's own CancelledError (the worker was not cancelled) is a handler failure."""
    bus = create_memory_bus()
    seen: list[tuple[int, int]] = []

    async def handler(event: Event) -> None:
        seen.append((event.payload["i"], event.delivery_count))
        if event.payload["i"] == 0 and event.delivery_count == 1:
            raise asyncio.CancelledError

    policy = RedeliverPolicy(backoff=ExponentialBackoff(base_ms=10, max_ms=10))
    await bus.subscribe("t", handler, group="g", policy=policy)
    await bus.publish(Event("t", {"i": 0}))
    await bus.publish(Event("t", {"i": 1}))
    await wait_until(lambda: len(seen) == 3, 2.0, "both events, the first one twice")
    assert sorted(seen) == [(0, 1), (0, 2), (1, 1)]
    await bus.close()


async def test_memory_redeliver_after_rewind_never_hands_out_another_entry() -> None:
    """After a rewind two consumers may hold the same offset; once the group acked it and the
    log was trimmed, redelivering the other copy must not read a different entry."""
    bus = create_memory_bus()
    r1 = await bus._open_receiver("t", "g", private=False, prefetch=10)
    r2 = await bus._open_receiver("t", "g", private=False, prefetch=10)
    for i in range(3):
        await bus.publish(Event("t", {"i": i}))
    first = await r1.fetch(1, [])  # offset 0
    bus.rewind("t", "g", 0)
    again = await r2.fetch(3, [])  # offsets 0, 1, 2
    await r1.ack(first)
    await r2.ack(again[1:])  # the whole log is acked now and trimmed
    for i in range(3, 6):
        await bus.publish(Event("t", {"i": i}))
    fresh = await r2.redeliver(again[0])
    assert fresh is None or fresh.data == again[0].data
    stats = await bus.stats("t", "g")
    assert stats.pending == 0
    await bus.close()


async def test_request_pending_when_the_bus_closes_raises_bus_closed() -> None:
    """The caller was not cancelled, so it must not see a CancelledError."""
    bus = create_memory_bus()
    entered = asyncio.Event()

    async def slow(event: Event) -> str:
        entered.set()
        await asyncio.sleep(10)
        return "late"

    await bus.subscribe("svc", slow)
    pending = asyncio.create_task(bus.request("svc", {}, timeout=5.0))
    await entered.wait()
    await bus.close(timeout=0.2)
    with pytest.raises(BusClosedError):
        await pending
    assert not pending.cancelled()


async def test_an_observer_that_raises_never_costs_a_message() -> None:
    """A broken metrics hook is logged; the message is still dead-lettered once and acked."""

    class Broken(NoopObserver):
        def dead_lettered(self, topic: str, **kwargs: Any) -> None:  # type: ignore[override]
            raise RuntimeError("metrics backend down")

        def retried(self, event: Event, **kwargs: Any) -> None:  # type: ignore[override]
            raise RuntimeError("metrics backend down")

    bus = create_memory_bus(observer=Broken())
    calls = 0
    dead: list[DLQEntry] = []

    async def always_fails(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad")

    async def keep(entry: DLQEntry) -> None:
        dead.append(entry)

    try:
        await create_dlq_consumer(bus, "jobs.DLQ", keep, group="ops")
        options = ConsumerOptions(max_retries=1, backoff_base_ms=1, jitter=False)
        await run_consumer(bus, "jobs", always_fails, options, group="g")
        await bus.publish(Event("jobs", {"n": 1}))
        await wait_until(lambda: len(dead) == 1, 5, "the dead letter")
        await asyncio.sleep(0.2)
        assert calls == 2
        assert len(dead) == 1
        assert (await bus.stats("jobs", "g")).pending == 0
    finally:
        await bus.close()


async def test_handled_messages_are_acked_while_failed_ones_wait_out_a_long_backoff() -> None:
    """With the fetch loop waiting for room (most of the capacity failed and waits to be
    retried), the flush task still acks what was handled: nothing handled stays pending."""
    bus = create_memory_bus()
    capacity = bus._prefetch(1)
    handled: list[int] = []

    async def handler(event: Event) -> None:
        if event.payload["fail"]:
            raise RuntimeError("later")
        handled.append(event.payload["i"])

    policy = RedeliverPolicy(backoff=ExponentialBackoff(base_ms=60_000, max_ms=60_000))
    await bus.subscribe("t", handler, group="g", policy=policy)
    failing = capacity // 2 + 1  # enough to keep the fetch loop waiting for room
    for i in range(failing):
        await bus.publish(Event("t", {"i": i, "fail": True}))
    for i in range(20):
        await bus.publish(Event("t", {"i": i, "fail": False}))
    await wait_until(lambda: len(handled) == 20, 5.0, "the good ones handled")
    await wait_until(lambda: _pending(bus) == failing, 2.0, "only the failing ones pending")
    await bus.close(timeout=0.5)


def _pending(bus: MemoryBus) -> int:
    group = bus._topics["t"].groups["g"]
    return len(group.counts) - len(group.returned)


async def test_close_does_not_wait_for_a_handler_that_swallows_its_cancellation() -> None:
    bus = create_memory_bus()
    started = asyncio.Event()

    async def stubborn(event: Event) -> None:
        started.set()
        for _ in range(100):
            try:
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                continue  # swallowed: keeps running

    subscription = await bus.subscribe("t", stubborn, group="g")
    await bus.publish(Event("t", 1))
    await started.wait()
    loop = asyncio.get_running_loop()
    begun = loop.time()
    await subscription.close(timeout=0.2)
    assert loop.time() - begun < 2.5  # the timeout plus the cancellation grace
    assert (await bus.stats("t", "g")).lag == 1  # given back, not acked


async def test_subscribe_racing_close_never_leaves_a_live_subscription() -> None:
    bus = create_memory_bus()

    async def handler(event: Event) -> None: ...

    subscribing = asyncio.create_task(bus.subscribe("t", handler, group="g"))
    closing = asyncio.create_task(bus.close())
    results = await asyncio.gather(subscribing, return_exceptions=True)
    await closing
    if isinstance(results[0], BaseException):
        assert isinstance(results[0], BusClosedError)
    else:
        await results[0].close()
    assert bus._subscriptions == set()


async def test_a_received_id_and_timestamp_go_into_new_payloads() -> None:
    """Handlers commonly put the event's id and time into follow-up events."""
    bus = create_memory_bus()
    follow_ups: list[Any] = []

    async def handler(event: Event) -> None:
        await bus.publish(Event("audit", {"caused_by": event.id, "at": event.timestamp}))

    async def audit(event: Event) -> None:
        follow_ups.append(event.payload)

    await bus.subscribe("t", handler, group="g")
    await bus.subscribe("audit", audit, group="a")
    original = Event("t", 1)
    await bus.publish(original)
    await wait_until(lambda: len(follow_ups) == 1, 2.0, "the follow-up")
    assert follow_ups[0]["caused_by"] == str(original.id)
    await bus.close()


async def test_a_datetime_subclass_timestamp_still_encodes() -> None:
    from datetime import UTC, datetime

    from dotmac.events import JsonCodec

    class FrozenTime(datetime):
        pass

    moment = FrozenTime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    codec = JsonCodec()
    event = Event("t", 1, timestamp=moment)
    assert codec.decode(codec.encode(event)).timestamp == moment


async def test_plain_handlers_see_context_and_refuse_a_time_limit() -> None:
    import contextvars

    from dotmac.events import ConfigurationError

    request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rid", default=None)
    bus = create_memory_bus()
    seen: list[str | None] = []

    async def tag(event: Event, call_next: Any) -> Any:
        request_id.set("req-42")
        return await call_next(event)

    def handler(event: Event) -> None:
        seen.append(request_id.get())

    await bus.subscribe("t", handler, group="g", middleware=[tag])
    await bus.publish(Event("t", 1))
    await wait_until(lambda: seen == ["req-42"], 2.0, "the context in the thread")
    with pytest.raises(ConfigurationError, match="handler_timeout"):
        await run_consumer(bus, "t", handler, ConsumerOptions(handler_timeout=1.0), group="h")
    await bus.close()
