"""Topic listing and pattern discovery on the real brokers: what SCAN and the Kafka metadata
return, keys that are not streams, prefixes holding glob characters, a router on a pattern."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import Event, EventRouter, RedisConfig, create_kafka_bus, create_redis_bus
from dotmac.events.errors import ConfigurationError
from dotmac.events.testing import wait_until
from tests.support.kafka_helpers import kafka_test_config


@pytest.mark.redis
async def test_redis_lists_only_streams_under_its_prefix(redis_url: str) -> None:
    prefix = f"p[{uuid.uuid4().hex[:6]}]*?:"  # glob characters must be taken literally
    raw = redis_asyncio.Redis.from_url(redis_url)
    try:
        await raw.hset(f"{prefix}user.profile", mapping={"a": "1"})  # a hash, not a topic
        await raw.xadd(f"x{prefix}user.other", {"data": b"{}"})  # another prefix
        async with create_redis_bus(RedisConfig(url=redis_url, key_prefix=prefix)) as bus:
            for topic in ("user.created", "user.deleted", "order.placed"):
                await bus.publish(Event(topic, {}))
            assert await bus.topics() == ["order.placed", "user.created", "user.deleted"]
            assert await bus.topics("user.*") == ["user.created", "user.deleted"]
    finally:
        await raw.aclose()


@pytest.mark.redis
async def test_redis_router_on_a_pattern_picks_up_a_new_stream_within_the_refresh(
    redis_url: str, redis_prefix: str
) -> None:
    config = RedisConfig(url=redis_url, key_prefix=redis_prefix, block_ms=100, pattern_refresh=0.5)
    router = EventRouter()
    seen: list[str] = []

    @router.handler("tenant.*.signup", group="welcome")
    async def welcome(event: Event) -> None:
        seen.append(event.topic)

    async with create_redis_bus(config) as bus, create_redis_bus(config) as other:
        await router.start(bus)
        started = asyncio.get_running_loop().time()
        await other.publish(Event("tenant.acme.signup", {"user": 1}))
        await wait_until(lambda: bool(seen), 5.0, "the new stream's event")
        took = asyncio.get_running_loop().time() - started
        await router.stop()
    assert seen == ["tenant.acme.signup"]
    assert took < 0.5 + 1.5, f"picked up after {took:.2f}s with pattern_refresh=0.5"


def test_pattern_refresh_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="pattern_refresh"):
        RedisConfig(pattern_refresh=0)
    with pytest.raises(ConfigurationError, match="pattern_refresh"):
        kafka_test_config("localhost:9092", pattern_refresh=-1)


@pytest.mark.kafka
async def test_kafka_lists_topics_from_the_cluster_metadata(kafka_bootstrap: str) -> None:
    root = f"lst{uuid.uuid4().hex[:8]}"
    async with create_kafka_bus(kafka_test_config(kafka_bootstrap)) as bus:
        for topic in (f"{root}.a", f"{root}.b", f"{root}.b.c"):
            await bus.publish(Event(topic, {}))
        assert await bus.topics(f"{root}.*") == [f"{root}.a", f"{root}.b"]
        assert await bus.topics(f"{root}.**") == [f"{root}.a", f"{root}.b", f"{root}.b.c"]
        assert "__consumer_offsets" not in await bus.topics("**")
