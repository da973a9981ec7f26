"""The Kafka bus on a real broker: records on the wire, commits, pausing, errors, health, stats."""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from dotmac.events import (
    ConsumerOptions,
    Event,
    EventMetadata,
    JsonCodec,
    KafkaBus,
    run_consumer,
)
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.errors import ConfigurationError, PublishError, TransportError
from dotmac.events.testing.conformance import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
async def bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, num_partitions=1))
    yield bus
    await bus.close(timeout=5.0)


async def _committed(bootstrap: str, group_id: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tp = TopicPartition(topic, 0)
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=[tp])
        return int(offsets[tp].offset)
    finally:
        await admin.close()


async def test_record_carries_value_key_and_headers(bus: KafkaBus, kafka_bootstrap: str) -> None:
    topic = unique_topic("wire")
    event = Event(
        topic,
        {"n": 1},
        key="user-7",
        headers={"source": "billing"},
        tenant_id="acme",
        metadata=EventMetadata(correlation_id="corr-1", producer="svc"),
    )
    await bus.publish(event)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=30
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    assert record.key == b"user-7"
    assert JsonCodec().decode(record.value) == event
    headers = {name: value.decode() for name, value in record.headers}
    assert headers == {
        "source": "billing",
        "dotmac-event-id": str(event.id),
        "dotmac-tenant-id": "acme",
        "dotmac-correlation-id": "corr-1",
        "dotmac-producer": "svc",
        "dotmac-content-type": "application/json",
    }


async def test_commit_stays_below_a_running_message(bus: KafkaBus, kafka_bootstrap: str) -> None:
    topic = unique_topic("contiguous")
    gate = asyncio.Event()
    handled: list[int] = []

    async def handler(event: Event) -> None:
        if event.payload == 0:
            await gate.wait()
        handled.append(event.payload)

    await bus.subscribe(topic, handler, group="g", concurrency=4)
    # keys chosen so no message queues behind offset 0 in its worker lane (crc32 % 4)
    stuck_lane = zlib.crc32(b"k0") % 4
    keys = [
        "k0",
        *[f"k{i}" for i in range(1, 100) if zlib.crc32(f"k{i}".encode()) % 4 != stuck_lane],
    ]
    await bus.publish_many([Event(topic, i, key=keys[i]) for i in range(10)])
    await wait_until(lambda: len(handled) >= 9, 10, "offsets 1..9 handled")
    await asyncio.sleep(0.3)  # several acks went out meanwhile
    group_id = bus.config.group_id("g", topic)
    assert await _committed(kafka_bootstrap, group_id, topic) in (-1, 0)
    gate.set()
    await wait_until(lambda: len(handled) >= 10, 10, "offset 0 handled")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await _committed(kafka_bootstrap, group_id, topic) != 10:
        assert loop.time() < deadline, "commit did not reach 10"
        await asyncio.sleep(0.05)


async def test_stuck_message_pauses_its_partition(kafka_bootstrap: str) -> None:
    config = kafka_test_config(
        kafka_bootstrap, num_partitions=1, max_uncommitted=5, max_poll_records=3
    )
    bus = create_kafka_bus(config)
    topic = unique_topic("paused")
    gate = asyncio.Event()
    handled: list[int] = []

    async def handler(event: Event) -> None:
        if event.payload == 0:
            await gate.wait()
        handled.append(event.payload)

    try:
        await bus.subscribe(topic, handler, group="g", concurrency=2)
        await bus.publish_many([Event(topic, i) for i in range(40)])
        await wait_until(lambda: len(handled) >= 1, 10, "the first messages behind the stuck one")
        await asyncio.sleep(1.0)  # many fetch rounds (fetch_max_wait_ms=30) with room to spare
        assert len(handled) <= 5, f"{len(handled)} handled behind a stuck offset"
        gate.set()
        await wait_until(lambda: len(handled) >= 40, 15, "all 40 after the stuck one finished")
        assert sorted(handled) == list(range(40))
    finally:
        await bus.close(timeout=5.0)


async def test_failed_message_waits_for_its_backoff(bus: KafkaBus) -> None:
    topic = unique_topic("backoff")
    seen: list[float] = []

    async def handler(event: Event) -> None:
        seen.append(time.monotonic())
        if len(seen) < 3:
            raise RuntimeError("again")

    options = ConsumerOptions(max_retries=5, backoff_base_ms=200, jitter=False)
    await run_consumer(bus, topic, handler, options, group="g")
    await bus.publish(Event(topic, {"x": 1}))
    await wait_until(lambda: len(seen) >= 3, 10, "3 deliveries")
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert all(gap >= 0.18 for gap in gaps), gaps


async def test_health_and_stats(bus: KafkaBus) -> None:
    topic = unique_topic("stats")
    health = await bus.health()
    assert health.healthy and health.adapter == "kafka" and health.details["brokers"] >= 1
    assert health.latency_ms >= 0
    stats = await bus.stats(topic, "g")
    assert (stats.length, stats.lag, stats.dlq_depth) == (0, 0, 0)  # unknown topic: not created
    gate = asyncio.Event()

    async def handler(event: Event) -> None:
        await gate.wait()

    await bus.subscribe(topic, handler, group="g")
    for i in range(5):  # one record per produce: Tansu reports batch-based end offsets
        await bus.publish(Event(topic, i))
    await wait_until(lambda: bool(bus._receivers) and bus_pending(bus) >= 1, 10, "a pending one")
    stats = await bus.stats(topic, "g")
    assert stats.length == 5
    assert stats.lag == 5  # nothing committed yet
    assert stats.pending is not None and stats.pending >= 1
    gate.set()


def bus_pending(bus: KafkaBus) -> int:
    return sum(receiver.pending() for receiver in bus._receivers)


async def test_health_reports_an_unreachable_broker() -> None:
    from tests.support.kafka_server import free_port

    config = kafka_test_config(f"127.0.0.1:{free_port()}", request_timeout_ms=1000)
    bus = create_kafka_bus(config)
    try:
        health = await bus.health()
        assert not health.healthy and "error" in health.details
    finally:
        await bus.close()


async def test_publish_to_an_unreachable_broker_raises_publish_error() -> None:
    from tests.support.kafka_server import free_port

    config = kafka_test_config(
        f"127.0.0.1:{free_port()}", request_timeout_ms=1000, delivery_timeout_ms=2000
    )
    bus = create_kafka_bus(config)
    try:
        started = time.monotonic()
        with pytest.raises(PublishError):
            await bus.publish(Event(unique_topic("down"), {}))
        assert time.monotonic() - started < 15
    finally:
        await bus.close()


async def test_invalid_topic_names(bus: KafkaBus) -> None:
    with pytest.raises(PublishError, match="not a valid topic name"):
        await bus.publish(Event("bad topic!", {}))

    async def handler(event: Event) -> None:
        return None

    with pytest.raises(ConfigurationError) as info:
        await bus.subscribe("bad/topic", handler, group="g")
    assert info.value.field == "topic"


async def test_request_reply_inbox_is_deleted_at_close(kafka_bootstrap: str) -> None:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, num_partitions=1))
    topic = unique_topic("rpc")

    async def double(event: Event) -> int:
        return int(event.payload) * 2

    await bus.subscribe(topic, double)
    assert await bus.request(topic, 21, timeout=20) == 42
    inbox = bus._inbox
    assert inbox is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert inbox in await admin.list_topics()
        await bus.close(timeout=5.0)
        assert inbox not in await admin.list_topics()
    finally:
        await admin.close()


async def test_close_closes_every_client_even_when_one_fails(kafka_bootstrap: str) -> None:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, num_partitions=1))
    await bus.publish(Event(unique_topic("close"), {"n": 1}))  # starts the producer and admin
    producer, admin = bus._producer, bus._admin
    assert producer is not None and admin is not None
    real_stop = producer.stop

    async def failing_stop() -> None:
        await real_stop()
        raise ConnectionError("broker went away during stop")

    producer.stop = failing_stop  # type: ignore[method-assign]
    with pytest.raises(TransportError):
        await bus.close(timeout=5.0)
    assert admin._closed, "the admin client was left open"
