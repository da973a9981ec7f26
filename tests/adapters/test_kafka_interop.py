"""Interop with an independent client: confluent-kafka (librdkafka) on the same broker."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from dotmac.events import (
    ConsumerOptions,
    DLQEntry,
    Event,
    JsonCodec,
    create_dlq_consumer,
    run_consumer,
)
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.testing.conformance import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic

pytestmark = pytest.mark.kafka


def _confluent_read(bootstrap: str, topic: str, partitions: int, count: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "librdkafka-reader", "fetch.wait.max.ms": 50}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[Any] = []
    try:
        for _ in range(200):
            if len(records) >= count:
                break
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                records.append(message)
    finally:
        consumer.close()
    return records


def _confluent_partitions(bootstrap: str, topic: str, keys: list[str]) -> dict[str, int]:
    """Where librdkafka's Java-compatible partitioner (murmur2) puts each key."""
    placed: dict[str, int] = {}
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})

    def report(err: Any, message: Any) -> None:
        assert err is None, err
        placed[message.key().decode()] = message.partition()

    for key in keys:
        producer.produce(topic, b"probe", key=key.encode(), on_delivery=report)
    assert producer.flush(10) == 0
    return placed


async def test_librdkafka_reads_our_records_with_headers_and_partitions(
    kafka_bootstrap: str,
) -> None:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, num_partitions=3))
    topic, probe_topic = unique_topic("interop"), unique_topic("interop-probe")
    keys = [f"customer-{i}" for i in range(12)]
    sent = [
        Event(topic, {"i": i}, key=keys[i], headers={"trace": f"t{i}"}, tenant_id="acme")
        for i in range(12)
    ]
    try:
        await bus.publish_many(sent)
        await bus.publish(Event(probe_topic, {}))  # create it with the same partition count
        records = await asyncio.to_thread(_confluent_read, kafka_bootstrap, topic, 3, 12)
        placed = await asyncio.to_thread(_confluent_partitions, kafka_bootstrap, probe_topic, keys)
    finally:
        await bus.close()
    assert len(records) == 12
    codec = JsonCodec()
    by_key = {r.key().decode(): r for r in records}
    for event in sent:
        record = by_key[event.key or ""]
        assert codec.decode(record.value()) == event
        headers = {name: value.decode() for name, value in record.headers()}
        assert headers["trace"] == event.headers["trace"]
        assert headers["dotmac-tenant-id"] == "acme"
        assert headers["dotmac-event-id"] == str(event.id)
        assert record.partition() == placed[event.key or ""], "not the Java client's partition"
    assert len(set(placed.values())) > 1


async def test_foreign_record_goes_to_dlq_and_the_consumer_keeps_going(
    kafka_bootstrap: str,
) -> None:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, num_partitions=1))
    topic = unique_topic("foreign")
    good: list[int] = []
    dead: list[DLQEntry] = []

    async def handler(event: Event) -> None:
        good.append(event.payload["n"])

    async def keep(entry: DLQEntry) -> None:
        dead.append(entry)

    try:
        await bus.subscribe(topic, handler, group="g")
        await create_dlq_consumer(bus, f"{topic}.DLQ", keep, group="dlq")
        await bus.publish(Event(topic, {"n": 1}))

        def produce_foreign() -> None:
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            producer.produce(topic, b"<order id='7'/>", key=b"legacy", headers={"x": b"y"})
            assert producer.flush(10) == 0

        await asyncio.to_thread(produce_foreign)
        await bus.publish(Event(topic, {"n": 2}))
        await wait_until(lambda: len(good) >= 2 and len(dead) >= 1, 20, "dlq and both good ones")
    finally:
        await bus.close()
    assert good == [1, 2]
    assert len(dead) == 1
    entry = dead[0]
    assert entry.error_type == "DecodeError"
    assert entry.original_topic == topic
    assert entry.original_event is None  # not an event: the bytes are kept instead


async def test_foreign_bytes_never_jam_the_consumer(kafka_bootstrap: str) -> None:
    """Records librdkafka writes between our events (key and value not UTF-8, no value at all,
    an envelope with wrong types) are dead-lettered one at a time as DecodeError with their
    bytes; every valid event is handled exactly once and no valid one is dead-lettered."""
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap, num_partitions=1))
    topic = unique_topic("foreign-bytes")
    handled: list[int] = []
    dead: list[DLQEntry] = []

    async def handler(event: Event) -> None:
        handled.append(event.payload)

    async def keep(entry: DLQEntry) -> None:
        dead.append(entry)

    envelope = orjson.loads(JsonCodec().encode(Event(topic, 0)))
    wrong_types = orjson.dumps({**envelope, "id": 12, "headers": ["x"]})
    foreign: list[tuple[bytes | None, bytes | None]] = [  # (key, value)
        (b"\xff\xfe", b"garbage"),
        (None, b"\xff\xfe\x00not utf-8"),
        (b"k", None),
        (None, wrong_types),
        (b"\x80", b'{"v": 1}'),
    ]

    def produce_foreign(key: bytes | None, value: bytes | None) -> None:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(topic, value, key=key, headers={"raw": b"\xff"})
        assert producer.flush(10) == 0

    try:
        await run_consumer(bus, topic, handler, ConsumerOptions(max_retries=1), group="g")
        await create_dlq_consumer(bus, f"{topic}.DLQ", keep, group="dlq")
        for n, (key, value) in enumerate(foreign):
            await bus.publish(Event(topic, 2 * n, key="k"))
            await asyncio.to_thread(produce_foreign, key, value)
            await bus.publish(Event(topic, 2 * n + 1))
        valid = 2 * len(foreign)
        await wait_until(
            lambda: len(handled) >= valid and len(dead) >= len(foreign),
            30,
            "every valid event handled and every foreign record dead-lettered",
        )
        await asyncio.sleep(0.3)  # a late duplicate or dead letter would show up now
    finally:
        await bus.close()
    assert handled == list(range(valid))  # one partition: in order, each once
    assert [d.error_type for d in dead] == ["DecodeError"] * len(foreign)
    assert [d.original_event for d in dead] == [None] * len(foreign)
    assert [d.original_data for d in dead] == [value or b"" for _, value in foreign]
