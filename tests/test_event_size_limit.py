"""Events above ``max_event_bytes`` are refused at publish with an EncodeError naming the size
and the limit, before anything reaches the broker; events at the limit go through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis import asyncio as redis_asyncio

from dotmac.events import Event, create_memory_bus, create_redis_bus
from dotmac.events.adapters.kafka import KafkaBus
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.codec import JsonCodec
from dotmac.events.engine.bus import MAX_EVENT_BYTES
from dotmac.events.errors import ConfigurationError, EncodeError
from tests.support.kafka_helpers import kafka_test_config, unique_topic

pytestmark = pytest.mark.timeout(60)

LIMIT = 4096


def _sized(topic: str, size: int) -> Event:
    """An event whose JsonCodec encoding is exactly ``size`` bytes."""
    event = Event(topic, "")
    overhead = len(JsonCodec().encode(event))
    event = Event(topic, "x" * (size - overhead), id=event.id, timestamp=event.timestamp)
    assert len(JsonCodec().encode(event)) == size
    return event


def _refused(error: EncodeError, size: int, limit: int) -> None:
    assert f"{size} bytes" in str(error) and f"max_event_bytes ({limit})" in str(error)
    assert error.retryable is False


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_redis_refuses_above_the_limit_and_sends_nothing(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    bus = create_redis_bus(
        RedisConfig(url=redis_url, key_prefix=redis_prefix, max_event_bytes=LIMIT)
    )
    try:
        await bus.publish(_sized("sized", LIMIT))  # at the limit: accepted
        with pytest.raises(EncodeError) as one:
            await bus.publish(_sized("sized", LIMIT + 1))
        _refused(one.value, LIMIT + 1, LIMIT)
        with pytest.raises(EncodeError) as many:  # one too large refuses the whole batch
            await bus.publish_many([_sized("sized", 500), _sized("sized", LIMIT + 50)])
        _refused(many.value, LIMIT + 50, LIMIT)
        with pytest.raises(EncodeError):  # delayed events are checked too
            await bus.publish(_sized("sized", LIMIT + 1), delay=60)
    finally:
        await bus.close()
    assert await raw.xlen(f"{redis_prefix}sized") == 1
    assert not [key async for key in raw.scan_iter(f"{redis_prefix}*delay*")]


async def test_redis_default_is_one_mebibyte(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    assert RedisConfig().max_event_bytes == MAX_EVENT_BYTES == 1_048_576
    bus = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix))
    try:
        await bus.publish(_sized("big", MAX_EVENT_BYTES))
        with pytest.raises(EncodeError) as caught:
            await bus.publish(_sized("big", 2 * MAX_EVENT_BYTES))
    finally:
        await bus.close()
    _refused(caught.value, 2 * MAX_EVENT_BYTES, MAX_EVENT_BYTES)
    assert await raw.xlen(f"{redis_prefix}big") == 1


async def test_kafka_limit_defaults_to_max_request_size(kafka_bootstrap: str) -> None:
    topic = unique_topic("sized")
    config = kafka_test_config(kafka_bootstrap, max_request_size=200_000)
    bus = KafkaBus(config)
    received: asyncio.Queue[Event] = asyncio.Queue()
    try:
        assert bus.max_event_bytes == 200_000
        await bus.subscribe(topic, received.put, group="g")
        with pytest.raises(EncodeError) as caught:
            await bus.publish_many([_sized(topic, 1_000), _sized(topic, 200_001)])
        _refused(caught.value, 200_001, 200_000)
        await bus.publish(_sized(topic, 150_000))
        first = await asyncio.wait_for(received.get(), 30)
        assert len(first.payload) > 140_000  # the small event of the refused batch never came
    finally:
        await bus.close()


async def test_kafka_limit_below_max_request_size(kafka_bootstrap: str) -> None:
    bus = KafkaBus(kafka_test_config(kafka_bootstrap, max_event_bytes=LIMIT))
    try:
        with pytest.raises(EncodeError) as caught:
            await bus.publish(_sized(unique_topic("sized"), LIMIT + 1))
    finally:
        await bus.close()
    _refused(caught.value, LIMIT + 1, LIMIT)


async def test_memory_bus_has_the_default_limit() -> None:
    bus = create_memory_bus()
    try:
        assert bus.max_event_bytes == MAX_EVENT_BYTES
        with pytest.raises(EncodeError):
            await bus.publish(_sized("sized", MAX_EVENT_BYTES + 1))
    finally:
        await bus.close()


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RedisConfig(max_event_bytes=0), "max_event_bytes"),
        (lambda: RedisConfig(max_event_bytes=True), "max_event_bytes"),
        (lambda: RedisConfig(max_event_bytes=600 * 1024 * 1024), "max_event_bytes"),
        (lambda: KafkaConfig(max_event_bytes=2_000_000), "max_event_bytes"),
        (lambda: KafkaConfig(max_event_bytes=0), "max_event_bytes"),
    ],
)
def test_bad_limits_name_the_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()
    assert caught.value.field == field
