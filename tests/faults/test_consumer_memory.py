"""Resident memory of a consumer over 100,000 events with a slow handler at concurrency 64.

A producer keeps up to 5,000 events ahead of the consumer; RSS (``VmRSS`` in
/proc/self/status) is sampled every 10,000 handled events. After the first 20,000 (warm-up:
pools, buffers, the worker tasks) it must stay on a plateau: a leak of even 100 bytes per
event would add about 8 MB over the remaining 80,000. The figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dotmac.events import Event, EventBus, RedisConfig, create_memory_bus, create_redis_bus

pytestmark = pytest.mark.slow

TOTAL = 100_000
AHEAD = 5_000
SAMPLE_EVERY = 10_000
WARM_UP = 20_000
PLATEAU_MB = 6.0  # growth allowed after warm-up


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    made: Callable[[], EventBus]
    if request.param == "memory":
        made = create_memory_bus
    else:
        config = RedisConfig(
            url=request.getfixturevalue("redis_url"),
            key_prefix=request.getfixturevalue("redis_prefix"),
            block_ms=100,
            max_stream_length=AHEAD * 4,  # what a consumer may still need, not 100k
        )
        made = lambda: create_redis_bus(config)  # noqa: E731
    created = made()
    yield created
    await created.close()


@pytest.mark.timeout(120)
async def test_rss_stays_flat_over_100k_events_with_slow_handlers(bus: EventBus) -> None:
    handled = 0
    seen: set[int] = set()

    async def slow(event: Event) -> None:
        nonlocal handled
        await asyncio.sleep(0.001)
        handled += 1
        if len(seen) < 1000:  # a bounded sample, so the test itself does not grow
            seen.add(event.payload["n"])

    subscription = await bus.subscribe("rss", slow, group="g", concurrency=64)
    samples: list[tuple[int, float]] = []
    began = time.monotonic()
    published = 0
    next_sample = SAMPLE_EVERY
    while handled < TOTAL:
        if published < TOTAL and published - handled < AHEAD:
            batch = [
                Event("rss", {"n": n, "pad": "x" * 200}, key=f"k{n % 500}")
                for n in range(published, min(published + 1_000, TOTAL))
            ]
            await bus.publish_many(batch)
            published += len(batch)
        else:
            await asyncio.sleep(0.005)
        if handled >= next_sample:
            samples.append((handled, rss_mb()))
            next_sample += SAMPLE_EVERY
        assert time.monotonic() - began < 100, f"only {handled} handled"
    elapsed = time.monotonic() - began
    await subscription.close()
    figures = ", ".join(f"{count // 1000}k: {mb:.1f} MB" for count, mb in samples)
    print(f"\nRSS over {TOTAL} events in {elapsed:.1f}s ({TOTAL / elapsed:,.0f}/s): {figures}")
    baseline = next(mb for count, mb in samples if count >= WARM_UP)
    later = [mb for count, mb in samples if count >= WARM_UP]
    assert max(later) - baseline < PLATEAU_MB, figures
    assert handled == TOTAL
