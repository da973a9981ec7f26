"""Memory bus: publish -> handler throughput, and the memory one unconsumed event holds.

Throughput: one subscription (concurrency 1, ``create_memory_bus()`` defaults), then N events
published one by one; the time runs from the first publish to the last handler call. Baseline:
an ``asyncio.Queue`` (bounded like the bus, 10,000) carrying ``orjson.dumps`` of topic, key and
payload to one consumer task that ``orjson.loads`` each and calls the same handler.

Held memory: a named group joins and leaves (it lags: nobody reads), then N events are published;
tracemalloc measures what the bus still holds per event, against the size of the encoded event.
The ratio is ``(held - FIXED_OVERHEAD) / encoded``; the target is 1.5.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

import orjson

from benchmarks.common import Comparison, Row, Sample, Settings, Tally, fresh, key, payload
from benchmarks.common import raw_envelope as envelope
from dotmac.events import Event, JsonCodec, MemoryConfig, create_memory_bus

__all__ = ["FIXED_OVERHEAD", "comparisons"]

FIXED_OVERHEAD = 128
"""Bytes per held event allowed on top of 1.5x its encoding (log slots, key, allocator rounding)."""

QUEUE_SIZE = 10_000  # MemoryConfig().max_queue_size, so both sides apply the same back-pressure


async def ours_throughput(n: int) -> Sample:
    bus = create_memory_bus()
    topic = fresh("memory")
    tally = Tally(n)
    try:
        await bus.subscribe(topic, tally, group="bench")
        started = time.perf_counter()
        for i in range(n):
            await bus.publish(Event(topic, payload(i), key=key(i)))
        await tally.done.wait()
        return {"memory.publish_consume": n / (time.perf_counter() - started)}
    finally:
        await bus.close()


async def raw_throughput(n: int) -> Sample:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_SIZE)
    topic = fresh("memory")
    tally = Tally(n)

    async def consume() -> None:
        for _ in range(n):
            await tally(orjson.loads(await queue.get()))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(consume())
        for i in range(n):
            await queue.put(orjson.dumps(envelope(topic, i)))
    return {"memory.publish_consume": n / (time.perf_counter() - started)}


async def ours_held(n: int) -> Sample:
    bus = create_memory_bus(MemoryConfig(max_queue_size=n + 1))
    topic = fresh("held")

    async def never(event: Event) -> None:
        raise AssertionError("no event may be handled: the group only lags")

    try:
        # A named group that joined once and left keeps its place: every later event is held.
        subscription = await bus.subscribe(topic, never, group="lagging")
        await subscription.close()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                await bus.publish(Event(topic, payload(i), key=key(i)))
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        stats = await bus.stats(topic, "lagging")
        if stats.length != n:
            raise RuntimeError(f"the bus holds {stats.length} events, expected {n}")
        return {"memory.held_per_event": held / n}
    finally:
        await bus.close()


async def encoded_size(n: int) -> Sample:
    """Mean size of the codec's encoding of the events ``ours_held`` publishes."""
    codec = JsonCodec()
    topic = fresh("held")
    sizes = [len(codec.encode(Event(topic, payload(i), key=key(i)))) for i in range(min(n, 1000))]
    return {"memory.held_per_event": sum(sizes) / len(sizes)}


def held_ratio(held: float, encoded: float) -> float:
    return (held - FIXED_OVERHEAD) / encoded


def comparisons(s: Settings) -> list[Comparison]:
    return [
        Comparison(
            rows=(
                Row(
                    id="memory.publish_consume",
                    path="memory: publish -> handler, concurrency 1",
                    baseline="asyncio.Queue of orjson bytes + loads + handler",
                    unit="ev/s",
                    target=(">=", 0.7),
                ),
            ),
            ours=lambda: ours_throughput(s.memory_events),
            baseline=lambda: raw_throughput(s.memory_events),
        ),
        Comparison(
            rows=(
                Row(
                    id="memory.held_per_event",
                    path="memory: bytes held per unconsumed event",
                    baseline=f"encoded event bytes; ratio (held - {FIXED_OVERHEAD} B) / encoded",
                    unit="B",
                    target=("<=", 1.5),
                    ratio=held_ratio,
                ),
            ),
            ours=lambda: ours_held(s.held_events),
            baseline=lambda: encoded_size(s.held_events),
        ),
    ]
