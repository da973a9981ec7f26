"""Our Redis paths beside FastStream's (informational rows: no target).

FastStream comes from the ``bench`` extra only; without it these rows are left out, and the
runner says so. Both sides run with their defaults, FastStream's per-message logging off.

* consume: a stream subscriber with a consumer group (``StreamSub(group=..., consumer=...)``,
  defaults otherwise: ``XREADGROUP`` without ``COUNT``, one handler call at a time, an ``XACK``
  per message, the body validated against the handler's ``dict`` annotation), the stream
  pre-filled by FastStream's own publisher and the group created at ``0`` so it reads the
  backlog; timed from the first to the last handler call. Ours: the ``redis.consume_c1`` side.
* publish: ``await broker.publish(payload, stream=...)`` one at a time against the
  ``redis.publish_awaited`` side.
"""

from __future__ import annotations

import time
from typing import Any

from faststream.redis import RedisBroker, StreamSub

from benchmarks.common import Comparison, Row, Sample, Settings, Tally, fresh, payload
from benchmarks.redis_streams import FILL_CHUNK, drop, ours_consume, ours_publish

__all__ = ["comparisons"]


async def faststream_consume(s: Settings, row: str) -> Sample:
    n = s.faststream_events
    stream = fresh("faststream")
    broker = RedisBroker(s.redis_url, logger=None)
    tally = Tally(n)

    @broker.subscriber(stream=StreamSub(stream, group="bench", consumer="c1"))
    async def handle(body: dict[str, Any]) -> None:
        await tally(body)

    try:
        client = await broker.connect()
        for start in range(0, n, FILL_CHUNK):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + FILL_CHUNK, n)):
                    await broker.publish(payload(i), stream=stream, pipeline=pipe)
                await pipe.execute()
        await client.xgroup_create(stream, "bench", id="0")
        await broker.start()
        await tally.done.wait()
        return {row: tally.rate()}
    finally:
        await broker.stop()
        await drop(s.redis_url, stream)


async def faststream_publish(s: Settings, row: str) -> Sample:
    n = s.publish_events
    stream = fresh("faststream")
    broker = RedisBroker(s.redis_url, logger=None)
    try:
        await broker.connect()
        await broker.ping(timeout=5)
        started = time.perf_counter()
        for i in range(n):
            await broker.publish(payload(i), stream=stream)
        return {row: n / (time.perf_counter() - started)}
    finally:
        await broker.stop()
        await drop(s.redis_url, stream)


def comparisons(s: Settings) -> list[Comparison]:
    consume, publish = "faststream.consume_c1", "faststream.publish_awaited"
    return [
        Comparison(
            rows=(
                Row(
                    id=consume,
                    path="redis: consume, concurrency 1 (ours, as redis.consume_c1)",
                    baseline="FastStream StreamSub with a consumer group",
                    unit="ev/s",
                    target=None,
                ),
            ),
            ours=lambda: ours_consume(s, consume, s.faststream_events),
            baseline=lambda: faststream_consume(s, consume),
        ),
        Comparison(
            rows=(
                Row(
                    id=publish,
                    path="redis: awaited publish, one at a time (ours)",
                    baseline="FastStream awaited broker.publish(stream=...)",
                    unit="ev/s",
                    target=None,
                ),
            ),
            ours=lambda: ours_publish(s, publish),
            baseline=lambda: faststream_publish(s, publish),
        ),
    ]
