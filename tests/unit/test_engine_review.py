"""Regression tests for the consumer engine and the memory bus: close, cancellation, capacity."""

from __future__ import annotations

import asyncio
from typing import Any

from dotmac.events import ConsumerOptions, Event, create_memory_bus, run_consumer
from dotmac.events.testing import wait_until


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
    for i in range(12):  # more than the subscription's capacity (10)
        await bus.publish(Event("t", {"i": i}))
    await wait_until(lambda: calls == 10, 2.0, "the first ten to fail")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await subscription.close(timeout=3.0)
    assert loop.time() - started < 1.0
    stats = await bus.stats("t", "g")
    assert stats.lag == 12  # all given back, none acked
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
