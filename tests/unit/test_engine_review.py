"""Regression tests for the consumer engine and the memory bus: close, cancellation, capacity."""

from __future__ import annotations

import asyncio

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
