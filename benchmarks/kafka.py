"""Kafka: KafkaBus with its defaults against the raw aiokafka code a user writes.

Both sides use fresh 3-partition topics (the bus's default ``num_partitions``) and the same
client settings: the raw producer and consumer take acks, linger, batch size, fetch wait, poll
records and session timeouts from ``KafkaConfig()``'s defaults.

* consume: N events pre-filled, then ``run_consumer`` with default ``ConsumerOptions``
  (concurrency 1), timed from the first to the last handler call, so the group join (seconds on
  any broker) is left out. Baseline: ``getmany``, ``orjson.loads`` and the same handler per
  record, one ``commit()`` per ``getmany``.
* publish_many: batches of 100 against 100 ``send`` then ``flush``. The bus's topic is created
  (by one warm-up publish) and the raw producer started before the clock.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.common import Comparison, Row, Sample, Settings, Tally, events, fresh, key, payload
from benchmarks.common import raw_envelope as envelope
from dotmac.events import ConsumerOptions, Event, KafkaConfig, create_kafka_bus, run_consumer

__all__ = ["comparisons"]

FILL_CHUNK = 500
BATCH = 100


def producer_settings(config: KafkaConfig) -> dict[str, Any]:
    return {
        "bootstrap_servers": config.bootstrap_servers,
        "acks": config.acks,
        "linger_ms": config.linger_ms,
        "max_batch_size": config.batch_size,
        "compression_type": config.compression_type,
    }


def consumer_settings(config: KafkaConfig, group: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": config.bootstrap_servers,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": config.fetch_max_wait_ms,
        "max_poll_records": config.max_poll_records,
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
    }


@contextlib.asynccontextmanager
async def raw_topic(config: KafkaConfig, name: str) -> Any:
    """A started producer and a fresh topic with the bus's partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
    producer = AIOKafkaProducer(**producer_settings(config))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, config.num_partitions, 1)])
        await producer.start()
        try:
            yield producer
        finally:
            await producer.stop()
    finally:
        await admin.close()


def encoded(topic: str, i: int) -> tuple[bytes, bytes]:
    return orjson.dumps(envelope(topic, i)), key(i).encode()


async def ours_consume(s: Settings) -> Sample:
    n = s.kafka_events
    topic = fresh("consume")
    bus = create_kafka_bus(KafkaConfig(bootstrap_servers=s.kafka_bootstrap))
    tally = Tally(n)
    try:
        for start in range(0, n, FILL_CHUNK):
            await bus.publish_many(events(topic, start, min(start + FILL_CHUNK, n)))
        await run_consumer(bus, topic, tally, ConsumerOptions(), group="bench")
        await tally.done.wait()
        return {"kafka.consume": tally.rate()}
    finally:
        await bus.close()


async def raw_consume(s: Settings) -> Sample:
    n = s.kafka_events
    config = KafkaConfig(bootstrap_servers=s.kafka_bootstrap)
    topic = fresh("consume")
    tally = Tally(n)
    async with raw_topic(config, topic) as producer:
        for i in range(n):
            value, record_key = encoded(topic, i)
            await producer.send(topic, value, key=record_key)
        await producer.flush()
    consumer = AIOKafkaConsumer(topic, **consumer_settings(config, fresh("group")))
    await consumer.start()
    try:
        while tally.count < n:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    await tally(orjson.loads(record.value))
            if batches:
                await consumer.commit()
        return {"kafka.consume": tally.rate()}
    finally:
        await consumer.stop()


async def ours_publish_many(s: Settings) -> Sample:
    n = s.kafka_events
    topic = fresh("publish-many")
    bus = create_kafka_bus(KafkaConfig(bootstrap_servers=s.kafka_bootstrap))
    try:
        await bus.publish(Event(topic, payload(-1), key=key(-1)))  # connects, creates the topic
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await bus.publish_many(events(topic, start, min(start + BATCH, n)))
        return {"kafka.publish_many": n / (time.perf_counter() - started)}
    finally:
        await bus.close()


async def raw_publish_many(s: Settings) -> Sample:
    n = s.kafka_events
    config = KafkaConfig(bootstrap_servers=s.kafka_bootstrap)
    topic = fresh("publish-many")
    async with raw_topic(config, topic) as producer:
        await producer.send_and_wait(topic, *encoded(topic, -1))
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            for i in range(start, min(start + BATCH, n)):
                value, record_key = encoded(topic, i)
                await producer.send(topic, value, key=record_key)
            await producer.flush()
        return {"kafka.publish_many": n / (time.perf_counter() - started)}


def comparisons(s: Settings) -> list[Comparison]:
    return [
        Comparison(
            rows=(
                Row(
                    id="kafka.consume",
                    path="kafka: consume, default ConsumerOptions, concurrency 1",
                    baseline="aiokafka getmany + loads + handler + commit",
                    unit="ev/s",
                    target=(">=", 0.8),
                ),
            ),
            ours=lambda: ours_consume(s),
            baseline=lambda: raw_consume(s),
        ),
        Comparison(
            rows=(
                Row(
                    id="kafka.publish_many",
                    path=f"kafka: publish_many, batches of {BATCH}",
                    baseline=f"aiokafka send x {BATCH} + flush",
                    unit="ev/s",
                    target=(">=", 0.9),
                ),
            ),
            ours=lambda: ours_publish_many(s),
            baseline=lambda: raw_publish_many(s),
        ),
    ]
