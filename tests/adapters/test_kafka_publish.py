"""Publishing on Kafka: concurrent publish() calls each await their own record while aiokafka
batches them; publish_many hands over closed batches and awaits them all. Real broker."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from dotmac.events import EncodeError, Event, JsonCodec, KafkaBus, PublishError
from dotmac.events.adapters.kafka import create_kafka_bus
from tests.support.kafka_helpers import kafka_test_config, unique_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
async def bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, num_partitions=3))
    yield bus
    await bus.close(timeout=5.0)


async def read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of ``topic`` (every partition), in partition order."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=30
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def test_concurrent_publishes_all_land_once(bus: KafkaBus, kafka_bootstrap: str) -> None:
    topic = unique_topic("concurrent")
    await bus.publish(Event(topic, "warm-up"))  # creates the topic
    events = [Event(topic, {"n": i}, key=f"k{i % 5}") for i in range(200)]
    assert await asyncio.gather(*(bus.publish(event) for event in events)) == [None] * 200
    records = await read_all(kafka_bootstrap, topic, 201)
    codec = JsonCodec()
    seen = collections.Counter(str(codec.decode(record.value).id) for record in records)
    assert all(seen[str(event.id)] == 1 for event in events)
    assert sum(seen.values()) == 201


async def test_publish_many_of_100_lands_in_order_per_key(
    bus: KafkaBus, kafka_bootstrap: str
) -> None:
    topic = unique_topic("many")
    events = [Event(topic, i, key=f"k{i % 7}") for i in range(100)]
    await bus.publish_many(events)
    records = await read_all(kafka_bootstrap, topic, 100)
    assert len(records) == 100
    by_key: dict[bytes, list[int]] = collections.defaultdict(list)
    partition_of: dict[bytes, set[int]] = collections.defaultdict(set)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key].append(JsonCodec().decode(record.value).payload)
        partition_of[record.key].add(record.partition)
    for k in range(7):
        key = f"k{k}".encode()
        assert by_key[key] == list(range(k, 100, 7))  # every one, in publishing order
        assert len(partition_of[key]) == 1
    assert len({p for parts in partition_of.values() for p in parts}) > 1  # spread by key


async def test_publish_many_puts_a_key_where_publish_puts_it(
    bus: KafkaBus, kafka_bootstrap: str
) -> None:
    topic = unique_topic("same-partition")
    keys = [f"customer-{i}" for i in range(12)]
    for key in keys:
        await bus.publish(Event(topic, "single", key=key))
    await bus.publish_many([Event(topic, "many", key=key) for key in keys])
    await bus.publish_many([Event(topic, "keyless") for _ in range(10)])
    records = await read_all(kafka_bootstrap, topic, 34)
    partitions: dict[bytes, set[int]] = collections.defaultdict(set)
    for record in records:
        if record.key is not None:
            partitions[record.key].add(record.partition)
    assert len(partitions) == 12
    assert all(len(found) == 1 for found in partitions.values()), partitions


async def test_publish_many_overflowing_a_batch_keeps_order(kafka_bootstrap: str) -> None:
    # batch_size far below the records' total: one partition gets a chain of batches
    bus = create_kafka_bus(
        kafka_test_config(kafka_bootstrap, num_partitions=1, batch_size=1024, linger_ms=50)
    )
    topic = unique_topic("chain")
    try:
        await bus.publish_many([Event(topic, {"n": i, "pad": "x" * 200}) for i in range(60)])
    finally:
        await bus.close(timeout=5.0)
    records = await read_all(kafka_bootstrap, topic, 60)
    payloads = [
        JsonCodec().decode(r.value).payload["n"] for r in sorted(records, key=lambda r: r.offset)
    ]
    assert payloads == list(range(60))


async def test_an_oversized_record_refuses_the_whole_call(
    kafka_bootstrap: str,
) -> None:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, max_request_size=4096))
    topic = unique_topic("too-large")
    try:
        await bus.publish(Event(topic, "warm-up"))
        with pytest.raises(EncodeError, match="max_event_bytes"):  # refused before sending
            await bus.publish_many([Event(topic, 0), Event(topic, "x" * 10_000)])
        # Within max_event_bytes (= max_request_size) but over it with the record's overhead
        # (key and headers): the whole call is refused too, as the engine refuses it.
        overhead = len(JsonCodec().encode(Event(topic, "")))
        at_limit = Event(topic, "x" * (4096 - overhead))
        with pytest.raises(PublishError, match="MessageSizeTooLarge") as whole:
            await bus.publish_many([Event(topic, 1), at_limit, Event(topic, 3)])
        assert whole.value.may_have_been_written is False
        assert whole.value.retryable is False
        with pytest.raises(PublishError, match="MessageSizeTooLarge") as refused:
            await bus.publish(at_limit)
        assert refused.value.may_have_been_written is False  # refused: safe to send again
        await bus.publish(Event(topic, "after"))
    finally:
        await bus.close(timeout=5.0)
    records = await read_all(kafka_bootstrap, topic, 2)
    assert sorted(str(JsonCodec().decode(r.value).payload) for r in records) == [
        "after",
        "warm-up",
    ]


async def test_the_idempotent_producer_works_or_is_refused_clearly(kafka_bootstrap: str) -> None:
    """``enable_idempotence`` needs a broker that grants producer ids (InitProducerId): Apache
    Kafka does and the event lands once; Tansu, the broker the suite starts, does not, and the
    publish fails at once, not retryable, naming the setting, with nothing written."""
    config = kafka_test_config(kafka_bootstrap, enable_idempotence=True, acks="all")
    bus = create_kafka_bus(config)
    topic = unique_topic("idempotent")
    try:
        await bus.publish(Event(topic, "once"))
    except PublishError as refused:
        assert refused.retryable is False
        assert refused.may_have_been_written is False
        assert "enable_idempotence" in str(refused)
        return
    finally:
        await bus.close(timeout=5.0)
    records = await read_all(kafka_bootstrap, topic, 1)
    assert [JsonCodec().decode(r.value).payload for r in records] == ["once"]
