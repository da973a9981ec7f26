"""A dead letter written by us, read by clients that know nothing of this library: redis-py's
raw XRANGE (what redis-cli shows) and confluent-kafka (librdkafka, as a Java service would)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from dotmac.events import (
    ConsumerOptions,
    Event,
    RedisConfig,
    Reject,
    create_redis_bus,
    run_consumer,
)
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.bus import EventBus
from dotmac.events.testing.conformance import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic
from tests.support.redis_server import redis_cli


async def _dead_letter(bus: EventBus, topic: str) -> Event:
    async def handler(event: Event) -> None:
        raise Reject("card declined")

    options = ConsumerOptions(max_retries=0)
    await run_consumer(bus, topic, handler, options, group="billing")
    original = Event(topic, {"order": 7, "name": "Zoë"}, key="cust-1", headers={"h": "v"})
    await bus.publish(original)
    return original


def _original_json(event: Event) -> dict[str, Any]:
    return {"topic": event.topic, "payload": event.payload, "id": str(event.id)}


async def test_redis_cli_reads_a_dead_letter_as_the_event_it_was(
    redis_url: str, redis_prefix: str
) -> None:
    bus = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix))
    raw = redis.Redis.from_url(redis_url)
    try:
        original = await _dead_letter(bus, "orders")
        stream = f"{redis_prefix}orders.DLQ"
        await wait_until(lambda: raw.xlen(stream) == 1, 15, "the dead letter")
        ((_, fields),) = raw.xrange(stream)
        decoded = orjson.loads(fields[b"data"])  # the original envelope, not a wrapper
        assert {k: decoded[k] for k in ("topic", "payload", "id")} == _original_json(original)
        assert decoded["headers"] == {"h": "v"}
        assert fields[b"key"] == b"cust-1"
        assert fields[b"kafka_dlt-original-topic"] == b"orders"
        assert fields[b"kafka_dlt-original-consumer-group"] == b"billing"
        assert fields[b"kafka_dlt-exception-fqcn"] == b"dotmac.events.errors.Reject"
        assert fields[b"kafka_dlt-exception-message"] == b"card declined"
        assert fields[b"dotmac-dlt-attempts"] == b"1"
        assert b"dotmac-dlt-last-failure-at" in fields
        # redis-cli itself: field names and values, one per line, the original JSON among them.
        shown = redis_cli(redis_url, "--raw", "XRANGE", stream, "-", "+").splitlines()
        pairs = dict(zip(shown[1::2], shown[2::2], strict=False))
        assert pairs["kafka_dlt-original-topic"] == "orders"
        assert pairs["kafka_dlt-exception-message"] == "card declined"
        assert pairs["key"] == "cust-1"
        assert orjson.loads(pairs["data"])["payload"] == {"order": 7, "name": "Zoë"}
    finally:
        raw.close()
        await bus.close()


def _confluent_read_one(bootstrap: str, topic: str, partition: int) -> Any:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "librdkafka-dlq", "fetch.wait.max.ms": 50}
    )
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    try:
        for _ in range(300):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                return message
    finally:
        consumer.close()
    pytest.fail(f"confluent-kafka read nothing from {topic}")


async def test_confluent_kafka_reads_a_dead_letter_as_the_event_it_was(
    kafka_bootstrap: str,
) -> None:
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap))
    topic = unique_topic("dlq-interop")
    try:
        original = await _dead_letter(bus, topic)
        dlq = f"{topic}.DLQ"

        positions: list[str] = []
        for _ in range(300):  # where it landed (a partition of the key's choosing)
            positions = [r.position async for r in bus.read_records(dlq)]
            if positions:
                break
            await asyncio.sleep(0.05)
        partition = int(positions[0].partition(":")[0])
        message = await asyncio.to_thread(_confluent_read_one, kafka_bootstrap, dlq, partition)
    finally:
        await bus.close()
    decoded = orjson.loads(message.value())
    assert {k: decoded[k] for k in ("topic", "payload", "id")} == _original_json(original)
    assert message.key() == b"cust-1"
    headers = dict(message.headers())
    assert headers["h"] == b"v"  # the original record's own headers are kept
    assert headers["dotmac-event-id"] == str(original.id).encode()
    assert headers["kafka_dlt-original-topic"] == topic.encode()
    assert headers["kafka_dlt-original-consumer-group"] == b"billing"
    assert headers["kafka_dlt-exception-fqcn"] == b"dotmac.events.errors.Reject"
    assert headers["kafka_dlt-exception-message"] == b"card declined"
    assert headers["dotmac-dlt-attempts"] == b"1"
    assert int.from_bytes(headers["kafka_dlt-original-partition"], "big") >= 0  # Spring's int
    assert len(headers["kafka_dlt-original-offset"]) == 8  # Spring's long
