"""NATS JetStream: NatsJetStreamBus with its defaults against the raw nats-py JetStream code.

Both sides use a fresh file-storage stream per repetition (the bus's default ``storage``) on
the same server, their own connection, and connect before the clock starts. The bus adds a
``Nats-Msg-Id`` header (the server deduplicates retried publishes on it) and a ``Dotmac-Key``
header to every message; the raw sides send the bare envelope, as the other baselines do.

* consume: N events pre-filled, then ``run_consumer`` with default ``ConsumerOptions``
  (concurrency 1, the bus's pull consumer with ``prefetch_count`` 200), timed from the first to
  the last handler call. Baseline: a durable ``pull_subscribe``, ``fetch(200)``,
  ``orjson.loads``, the same handler and ``msg.ack()`` per message.
* publish: awaited ``publish`` one at a time vs awaited ``js.publish``; ``publish_many`` of 100
  vs 100 ``js.publish_async`` then waiting for their 100 acks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import nats
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import errors as js_errors

from benchmarks.common import (
    Comparison,
    Row,
    Sample,
    Settings,
    Tally,
    events,
    fresh,
    key,
    payload,
    raw_envelope,
)
from dotmac.events import ConsumerOptions, Event, NatsConfig, create_nats_bus, run_consumer
from dotmac.events.adapters.nats import NatsJetStreamBus

__all__ = ["comparisons"]

STREAM_PREFIX = "BENCH"
SUBJECT_PREFIX = "bench"
FILL_CHUNK = 500
BATCH = 100
FETCH = NatsConfig().prefetch_count


def config(s: Settings) -> NatsConfig:
    return NatsConfig(
        servers=s.nats_url, stream_prefix=STREAM_PREFIX, subject_prefix=SUBJECT_PREFIX
    )


def bus_of(s: Settings) -> NatsJetStreamBus:
    return create_nats_bus(config(s))


def encoded(topic: str, i: int) -> bytes:
    return orjson.dumps(raw_envelope(topic, i))


async def publish_async(js: JetStreamContext, subject: str, numbers: range) -> None:
    """Every message on the wire first, then wait for all their acks (nats-py's batch way)."""
    acks = [await js.publish_async(subject, encoded(subject, i)) for i in numbers]
    await asyncio.gather(*acks)


async def delete_streams(js: JetStreamContext, *names: str) -> None:
    for name in names:
        try:
            await js.delete_stream(name)
        except js_errors.NotFoundError:
            pass


async def drop_ours(s: Settings, topic: str) -> None:
    """Delete the topic's stream and the bus's delayed-events stream (created by subscribing)."""
    client = await nats.connect(s.nats_url)
    try:
        names = (config(s).stream_name(topic), f"{STREAM_PREFIX}__DELAYED")
        await delete_streams(client.jetstream(), *names)
    finally:
        await client.close()


@asynccontextmanager
async def raw_stream(s: Settings) -> AsyncIterator[tuple[Client, JetStreamContext, str]]:
    """A connection and a fresh file-storage stream of one subject, deleted afterwards."""
    client = await nats.connect(s.nats_url)
    js = client.jetstream()
    tag = uuid.uuid4().hex[:10]
    name, subject = f"RAW_{tag}", f"raw.{tag}"
    try:
        await js.add_stream(name=name, subjects=[subject])
        yield client, js, subject
    finally:
        await delete_streams(js, name)
        await client.close()


async def ours_consume(s: Settings) -> Sample:
    n = s.nats_events
    topic = fresh("consume")
    bus = bus_of(s)
    tally = Tally(n)
    try:
        for start in range(0, n, FILL_CHUNK):
            await bus.publish_many(events(topic, start, min(start + FILL_CHUNK, n)))
        await run_consumer(bus, topic, tally, ConsumerOptions(), group="bench")
        await tally.done.wait()
        return {"nats.consume": tally.rate()}
    finally:
        await bus.close()
        await drop_ours(s, topic)


async def raw_consume(s: Settings) -> Sample:
    n = s.nats_events
    tally = Tally(n)
    async with raw_stream(s) as (_, js, subject):
        for start in range(0, n, FILL_CHUNK):
            await publish_async(js, subject, range(start, min(start + FILL_CHUNK, n)))
        subscription = await js.pull_subscribe(subject, durable="bench")
        try:
            while tally.count < n:
                try:
                    messages = await subscription.fetch(FETCH, timeout=1.0)
                except TimeoutError:
                    continue
                for msg in messages:
                    await tally(orjson.loads(msg.data))
                    await msg.ack()
        finally:
            await subscription.unsubscribe()
        return {"nats.consume": tally.rate()}


async def ours_publish_awaited(s: Settings) -> Sample:
    n = s.publish_events
    topic = fresh("publish")
    bus = bus_of(s)
    try:
        await bus.publish(Event(topic, payload(-1), key=key(-1)))  # connects, creates the stream
        started = time.perf_counter()
        for i in range(n):
            await bus.publish(Event(topic, payload(i), key=key(i)))
        return {"nats.publish_awaited": n / (time.perf_counter() - started)}
    finally:
        await bus.close()
        await drop_ours(s, topic)


async def raw_publish_awaited(s: Settings) -> Sample:
    n = s.publish_events
    async with raw_stream(s) as (_, js, subject):
        await js.publish(subject, encoded(subject, -1))
        started = time.perf_counter()
        for i in range(n):
            await js.publish(subject, encoded(subject, i))
        return {"nats.publish_awaited": n / (time.perf_counter() - started)}


async def ours_publish_many(s: Settings) -> Sample:
    n = s.nats_events
    topic = fresh("publish-many")
    bus = bus_of(s)
    try:
        await bus.publish(Event(topic, payload(-1), key=key(-1)))
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await bus.publish_many(events(topic, start, min(start + BATCH, n)))
        return {"nats.publish_many": n / (time.perf_counter() - started)}
    finally:
        await bus.close()
        await drop_ours(s, topic)


async def raw_publish_many(s: Settings) -> Sample:
    n = s.nats_events
    async with raw_stream(s) as (_, js, subject):
        await js.publish(subject, encoded(subject, -1))
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await publish_async(js, subject, range(start, min(start + BATCH, n)))
        return {"nats.publish_many": n / (time.perf_counter() - started)}


def _pair(
    row: Row, ours: Callable[[], Awaitable[Sample]], raw: Callable[[], Awaitable[Sample]]
) -> Comparison:
    return Comparison(rows=(row,), ours=ours, baseline=raw)


def comparisons(s: Settings) -> list[Comparison]:
    return [
        _pair(
            Row(
                id="nats.consume",
                path="nats jetstream: consume, default ConsumerOptions, concurrency 1",
                baseline=f"nats-py pull_subscribe fetch({FETCH}) + loads + handler + ack",
                unit="ev/s",
                target=None,
            ),
            lambda: ours_consume(s),
            lambda: raw_consume(s),
        ),
        _pair(
            Row(
                id="nats.publish_awaited",
                path="nats jetstream: awaited publish, one at a time",
                baseline="nats-py awaited js.publish, one at a time",
                unit="ev/s",
                target=None,
            ),
            lambda: ours_publish_awaited(s),
            lambda: raw_publish_awaited(s),
        ),
        _pair(
            Row(
                id="nats.publish_many",
                path=f"nats jetstream: publish_many, batches of {BATCH}",
                baseline=f"nats-py js.publish_async x {BATCH} + gather the acks",
                unit="ev/s",
                target=None,
            ),
            lambda: ours_publish_many(s),
            lambda: raw_publish_many(s),
        ),
    ]
