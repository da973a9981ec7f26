"""Redis Streams: RedisStreamsBus with its defaults against the raw redis-py loop a user writes.

Every side gets a fresh stream, its own client or bus, and one PING before the clock starts.
Raw entries have the bus's wire format (``data`` = orjson bytes, ``key``) and are written with
``XADD MAXLEN ~ 100000`` like the bus's; raw sides encode inside the timed loop as the bus does.

* consume: N events pre-filled, then ``run_consumer`` with default ``ConsumerOptions``
  (concurrency 1, then 8), timed from the first to the last handler call. Baseline: one loop of
  ``XREADGROUP COUNT 100`` pipelined with the ``XACK`` of the previous batch, ``orjson.loads``
  and the same handler.
* publish: awaited ``publish`` one at a time vs awaited ``XADD``; 32 tasks each awaiting
  ``publish`` vs 32 tasks each awaiting ``XADD``; ``publish_many`` of 100 vs a pipeline of 100.
* latency at 1,000 events/s: a paced publisher and a running consumer; the time from just
  before ``publish`` to the handler call, p50 and p99, the first 10% dropped as warm-up.
  Baseline: paced awaited ``XADD`` and an ``XREADGROUP BLOCK`` loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio as redis_asyncio

from benchmarks.common import (
    Comparison,
    Row,
    Sample,
    Settings,
    Tally,
    events,
    fresh,
    key,
    paced,
    payload,
    percentiles_ms,
    raw_envelope,
)
from dotmac.events import (
    ConsumerOptions,
    Event,
    Observer,
    RedisConfig,
    create_redis_bus,
    run_consumer,
)

__all__ = ["comparisons", "ours_consume", "raw_consume"]

MAXLEN = 100_000  # RedisConfig().max_stream_length
FILL_CHUNK = 500
BATCH = 100
TASKS = 32
RAW_BASELINE = "redis-py XREADGROUP COUNT 100 + loads + handler + pipelined XACK"


def raw_client(url: str) -> redis_asyncio.Redis:
    return redis_asyncio.Redis.from_url(url)


def raw_fields(topic: str, i: int, **extra: object) -> dict[bytes, bytes]:
    return {b"data": orjson.dumps(raw_envelope(topic, i, **extra)), b"key": key(i).encode()}


async def drop(url: str, *streams: str) -> None:
    client = raw_client(url)
    try:
        await client.delete(*streams)
    finally:
        await client.aclose()


async def ours_consume(
    s: Settings, row: str, n: int, *, concurrency: int = 1, observer: Observer | None = None
) -> Sample:
    """Pre-fill a stream through the bus, then time ``run_consumer`` with its defaults."""
    topic = fresh("consume")
    bus = create_redis_bus(RedisConfig(url=s.redis_url), observer=observer)
    tally = Tally(n)
    try:
        for start in range(0, n, FILL_CHUNK):
            await bus.publish_many(events(topic, start, min(start + FILL_CHUNK, n)))
        options = ConsumerOptions()
        await run_consumer(bus, topic, tally, options, group="bench", concurrency=concurrency)
        await tally.done.wait()
        return {row: tally.rate()}
    finally:
        await bus.close()
        await drop(s.redis_url, topic)


async def raw_consume(s: Settings, row: str, n: int) -> Sample:
    stream = fresh("consume")
    client = raw_client(s.redis_url)
    tally = Tally(n)
    try:
        for start in range(0, n, FILL_CHUNK):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + FILL_CHUNK, n)):
                pipe.xadd(stream, raw_fields(stream, i), maxlen=MAXLEN, approximate=True)
            await pipe.execute()
        await client.xgroup_create(stream, "bench", id="0")
        acks: list[bytes] = []
        while tally.count < n:
            pipe = client.pipeline(transaction=False)
            if acks:
                pipe.xack(stream, "bench", *acks)
            pipe.xreadgroup("bench", "raw", {stream: ">"}, count=BATCH, block=1000)
            reply = (await pipe.execute())[-1]
            acks = []
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    await tally(orjson.loads(fields[b"data"]))
                    acks.append(entry_id)
        if acks:
            await client.xack(stream, "bench", *acks)
        return {row: tally.rate()}
    finally:
        await client.delete(stream)
        await client.aclose()


async def ours_publish(s: Settings, row: str, tasks: int = 1) -> Sample:
    """``publish`` awaited one at a time, by one task or by ``tasks`` tasks at once."""
    n = s.publish_events
    topic = fresh("publish")
    bus = create_redis_bus(RedisConfig(url=s.redis_url))

    async def worker(first: int) -> None:
        for i in range(first, n, tasks):
            await bus.publish(Event(topic, payload(i), key=key(i)))

    try:
        await bus.health()  # connects
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for first in range(tasks):
                group.create_task(worker(first))
        return {row: n / (time.perf_counter() - started)}
    finally:
        await bus.close()
        await drop(s.redis_url, topic)


async def raw_publish(s: Settings, row: str, tasks: int = 1) -> Sample:
    n = s.publish_events
    stream = fresh("publish")
    client = raw_client(s.redis_url)

    async def worker(first: int) -> None:
        for i in range(first, n, tasks):
            await client.xadd(stream, raw_fields(stream, i), maxlen=MAXLEN, approximate=True)

    try:
        await client.ping()
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for first in range(tasks):
                group.create_task(worker(first))
        return {row: n / (time.perf_counter() - started)}
    finally:
        await client.delete(stream)
        await client.aclose()


async def ours_publish_many(s: Settings) -> Sample:
    n = s.batch_events
    topic = fresh("publish-many")
    bus = create_redis_bus(RedisConfig(url=s.redis_url))
    try:
        await bus.health()
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await bus.publish_many(events(topic, start, min(start + BATCH, n)))
        return {"redis.publish_many": n / (time.perf_counter() - started)}
    finally:
        await bus.close()
        await drop(s.redis_url, topic)


async def raw_publish_many(s: Settings) -> Sample:
    n = s.batch_events
    stream = fresh("publish-many")
    client = raw_client(s.redis_url)
    try:
        await client.ping()
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + BATCH, n)):
                pipe.xadd(stream, raw_fields(stream, i), maxlen=MAXLEN, approximate=True)
            await pipe.execute()
        return {"redis.publish_many": n / (time.perf_counter() - started)}
    finally:
        await client.delete(stream)
        await client.aclose()


def latency_sample(samples: list[float]) -> Sample:
    p50, p99 = percentiles_ms(samples, warmup=len(samples) // 10)
    return {"redis.latency_p50": p50, "redis.latency_p99": p99}


async def ours_latency(s: Settings) -> Sample:
    n = s.latency_events
    topic = fresh("latency")
    bus = create_redis_bus(RedisConfig(url=s.redis_url))
    samples: list[float] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        samples.append(time.perf_counter() - event.payload["sent"])
        if len(samples) == n:
            done.set()

    def send(i: int) -> Awaitable[None]:
        extra = {"sent": time.perf_counter()}
        return bus.publish(Event(topic, {**payload(i), **extra}, key=key(i)))

    try:
        await run_consumer(bus, topic, handler, ConsumerOptions(), group="bench")
        await paced(n, s.latency_rate, send)
        await done.wait()
        return latency_sample(samples)
    finally:
        await bus.close()
        await drop(s.redis_url, topic)


async def raw_latency(s: Settings) -> Sample:
    n = s.latency_events
    stream = fresh("latency")
    client = raw_client(s.redis_url)
    samples: list[float] = []

    async def consume() -> None:
        acks: list[bytes] = []
        while len(samples) < n:
            pipe = client.pipeline(transaction=False)
            if acks:
                pipe.xack(stream, "bench", *acks)
            pipe.xreadgroup("bench", "raw", {stream: ">"}, count=BATCH, block=1000)
            reply = (await pipe.execute())[-1]
            acks = []
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    event = orjson.loads(fields[b"data"])
                    samples.append(time.perf_counter() - event["payload"]["sent"])
                    acks.append(entry_id)

    def send(i: int) -> Awaitable[object]:
        fields = raw_fields(stream, i, sent=time.perf_counter())
        return client.xadd(stream, fields, maxlen=MAXLEN, approximate=True)

    try:
        await client.xgroup_create(stream, "bench", id="$", mkstream=True)
        async with asyncio.TaskGroup() as group:
            group.create_task(consume())
            await paced(n, s.latency_rate, send)
        return latency_sample(samples)
    finally:
        await client.delete(stream)
        await client.aclose()


def _pair(
    row: Row, ours: Callable[[], Awaitable[Sample]], raw: Callable[[], Awaitable[Sample]]
) -> Comparison:
    return Comparison(rows=(row,), ours=ours, baseline=raw)


def comparisons(s: Settings) -> list[Comparison]:
    rate = f"{s.latency_rate:,.0f}/s"
    latency_baseline = f"paced XADD + XREADGROUP BLOCK loop at {rate}; lower is better"
    return [
        _pair(
            Row(
                id="redis.consume_c1",
                path="redis: consume, default ConsumerOptions, concurrency 1",
                baseline=RAW_BASELINE,
                unit="ev/s",
                target=(">=", 0.8),
            ),
            lambda: ours_consume(s, "redis.consume_c1", s.consume_events),
            lambda: raw_consume(s, "redis.consume_c1", s.consume_events),
        ),
        _pair(
            Row(
                id="redis.consume_c8",
                path="redis: consume, default ConsumerOptions, concurrency 8",
                baseline=RAW_BASELINE,
                unit="ev/s",
                target=(">=", 0.6),
            ),
            lambda: ours_consume(s, "redis.consume_c8", s.consume_events, concurrency=8),
            lambda: raw_consume(s, "redis.consume_c8", s.consume_events),
        ),
        _pair(
            Row(
                id="redis.publish_awaited",
                path="redis: awaited publish, one at a time",
                baseline="awaited XADD, one at a time",
                unit="ev/s",
                target=(">=", 0.9),
            ),
            lambda: ours_publish(s, "redis.publish_awaited"),
            lambda: raw_publish(s, "redis.publish_awaited"),
        ),
        _pair(
            Row(
                id="redis.publish_32_tasks",
                path=f"redis: {TASKS} tasks each awaiting publish",
                baseline=f"{TASKS} tasks each awaiting XADD",
                unit="ev/s",
                target=(">=", 2.0),
            ),
            lambda: ours_publish(s, "redis.publish_32_tasks", tasks=TASKS),
            lambda: raw_publish(s, "redis.publish_32_tasks", tasks=TASKS),
        ),
        _pair(
            Row(
                id="redis.publish_many",
                path=f"redis: publish_many, batches of {BATCH}",
                baseline=f"pipelined XADD x {BATCH}",
                unit="ev/s",
                target=(">=", 0.95),
            ),
            lambda: ours_publish_many(s),
            lambda: raw_publish_many(s),
        ),
        Comparison(
            rows=(
                Row(
                    id="redis.latency_p50",
                    path=f"redis: end-to-end latency p50 at {rate}",
                    baseline=latency_baseline,
                    unit="ms",
                    target=("<=", 1.2),
                ),
                Row(
                    id="redis.latency_p99",
                    path=f"redis: end-to-end latency p99 at {rate}",
                    baseline=latency_baseline,
                    unit="ms",
                    target=("<=", 1.2),
                ),
            ),
            ours=lambda: ours_latency(s),
            baseline=lambda: raw_latency(s),
        ),
    ]
