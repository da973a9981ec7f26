"""Backlog figures that show trouble, on memory, Redis and Kafka: the oldest pending message's
age counts from its first delivery (the Redis heartbeat, retries and claims do not reset it),
and ``dlq_depth`` counts the dead-letter topic the group really uses."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.crc import key_slot

from dotmac.events import (
    ConfigurationError,
    ConsumerOptions,
    Event,
    EventBus,
    JsonCodec,
    RedisConfig,
    Reject,
    create_memory_bus,
    create_redis_bus,
    run_consumer,
)
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.adapters.redis.receiver import held_time_key
from dotmac.events.observability.prometheus import BacklogMonitor
from tests.support.kafka_helpers import kafka_test_config
from tests.support.observability import eventually

STUCK = 3.0  # seconds a handler is held
# Redis: a heartbeat every 0.2 s (claims after 1 s of idleness), so it runs many times while a
# handler is stuck; without the carried time the age would stay under 0.4 s. No delayed events
# here, so the delay mover sleeps: one cancelled while it opens a connection leaks that socket.
REDIS_TIMING = {
    "block_ms": 100,
    "claim_interval": 0.2,
    "claim_idle_ms": 1000,
    "delay_poll_interval": 3600.0,
}


@dataclasses.dataclass
class Transport:
    name: str
    bus: EventBus
    probe: EventBus  # another client of the same broker with no subscription (like the CLI)
    redis: Redis | None = None
    prefix: str = ""


@pytest.fixture(params=["memory", "redis", "kafka"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    if request.param == "memory":
        bus = create_memory_bus()
        made = Transport("memory", bus, bus.client())
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"age{uuid.uuid4().hex[:6]}:"
        config = RedisConfig(url=url, key_prefix=prefix, **REDIS_TIMING)
        made = Transport(
            "redis",
            create_redis_bus(config),
            create_redis_bus(config),
            Redis.from_url(url),
            prefix,
        )
    else:
        config = kafka_test_config(request.getfixturevalue("kafka_bootstrap"))
        made = Transport("kafka", create_kafka_bus(config), create_kafka_bus(config))
    yield made
    await made.bus.close()
    await made.probe.close()
    if made.redis is not None:
        await made.redis.aclose()


def topic(name: str) -> str:
    return f"backlog.{name}.{uuid.uuid4().hex[:8]}"


async def redis_idle_ms(transport: Transport, name: str, group: str) -> int:
    """The idle time Redis itself keeps for the group's oldest pending entry."""
    assert transport.redis is not None
    pending = await transport.redis.xpending_range(
        f"{transport.prefix}{name}", group, min="-", max="+", count=1
    )
    return int(pending[0]["time_since_delivered"])


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_a_stuck_handler_ages_from_its_first_delivery(transport: Transport) -> None:
    bus, name = transport.bus, topic("stuck")
    started, release = asyncio.Event(), asyncio.Event()

    async def stuck(event: Event) -> None:
        started.set()
        await release.wait()

    await bus.subscribe(name, stuck, group="g")
    await bus.publish(Event(name, {"n": 1}))
    await asyncio.wait_for(started.wait(), 30)
    loop = asyncio.get_running_loop()
    since = loop.time()
    await asyncio.sleep(STUCK)

    stats = await bus.stats(name, "g")
    assert stats.pending == 1
    assert stats.oldest_pending_age is not None
    assert STUCK - 0.5 <= stats.oldest_pending_age <= loop.time() - since + 1.0
    probe = await transport.probe.stats(name, "g")
    if transport.name == "kafka":  # Kafka keeps no delivery times: only the consumer knows
        assert (probe.pending, probe.oldest_pending_age) == (None, None)
    else:
        assert probe.oldest_pending_age is not None
        assert probe.oldest_pending_age >= STUCK - 0.5
    if transport.name == "redis":  # the heartbeat did reset Redis's own idle time meanwhile
        assert await redis_idle_ms(transport, name, "g") < 1000

    registry = CollectorRegistry()
    monitor = BacklogMonitor(registry)
    monitor.watch(bus, name, "g")
    await monitor.refresh()
    age = gauge(
        registry,
        "events_oldest_pending_age_seconds",
        topic=name,
        adapter=transport.name,
        group="g",
    )
    assert age is not None and age >= STUCK - 0.5
    monitor.close()

    release.set()

    async def drained() -> bool:
        stats = await bus.stats(name, "g")
        return stats.pending == 0 and stats.oldest_pending_age is None

    await eventually(drained, timeout=20)


async def test_retries_do_not_reset_the_age(transport: Transport) -> None:
    bus, name = transport.bus, topic("retried")
    attempts: list[int] = []
    release = asyncio.Event()

    async def failing(event: Event) -> None:
        attempts.append(event.delivery_count)
        if not release.is_set():
            raise RuntimeError("downstream still down")

    every_300ms = ConsumerOptions(
        max_retries=100, backoff_base_ms=300, backoff_multiplier=1.0, jitter=False
    )
    await run_consumer(bus, name, failing, every_300ms, group="g")
    await bus.publish(Event(name, {"n": 1}))
    await eventually(lambda: len(attempts) >= 1, timeout=30)
    await asyncio.sleep(STUCK)

    stats = await bus.stats(name, "g")
    assert len(attempts) >= 5 and attempts == list(range(1, len(attempts) + 1))
    assert stats.pending == 1
    assert stats.oldest_pending_age is not None and stats.oldest_pending_age >= STUCK - 0.5
    if transport.name == "redis":  # each retry is an XCLAIM, which resets Redis's idle time
        assert await redis_idle_ms(transport, name, "g") < 1000
    release.set()
    await eventually(lambda: bool(attempts) and attempts[-1] > 1, timeout=10)


async def test_dlq_depth_counts_the_groups_own_dead_letter_topic(transport: Transport) -> None:
    bus, name = transport.bus, topic("custom")
    dead_letters = topic("graveyard")

    async def refuse(event: Event) -> None:
        raise Reject("not today")

    options = ConsumerOptions(max_retries=0, dlq_topic=dead_letters)
    await run_consumer(bus, name, refuse, options, group="g")
    for n in range(3):
        await bus.publish(Event(name, {"n": n}))

    async def dead_lettered() -> bool:
        return (await bus.stats(name, "g")).dlq_depth == 3  # the live subscription's DLQ topic

    await eventually(dead_lettered, timeout=30)
    assert (await bus.stats(name)).dlq_depth == 3  # any live subscription to the topic
    assert (await bus.stats(name, "g", dlq_topic=f"{name}.DLQ")).dlq_depth == 0  # asked for
    # A process that does not consume the group cannot know a custom topic: it is told.
    assert (await transport.probe.stats(name, "g")).dlq_depth == 0
    assert (await transport.probe.stats(name, "g", dlq_topic=dead_letters)).dlq_depth == 3
    with pytest.raises(ConfigurationError) as info:
        await bus.stats(name, "g", dlq_topic="")
    assert info.value.field == "dlq_topic"

    registry = CollectorRegistry()
    monitor = BacklogMonitor(registry)
    monitor.watch(transport.probe, name, "g", dlq_topic=dead_letters)
    await monitor.refresh()
    assert gauge(registry, "events_dlq_depth", topic=name, adapter=transport.name) == 3
    monitor.close()


@pytest.fixture
async def redis_pair(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[EventBus, Redis]]:
    bus = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix, **REDIS_TIMING))
    client = Redis.from_url(redis_url)
    yield bus, client
    await bus.close()
    await client.aclose()


async def test_redis_age_counts_the_time_a_dead_consumer_held_the_entry(
    redis_pair: tuple[EventBus, Redis], redis_prefix: str
) -> None:
    """A consumer that died holding an entry: the live one claims it after claim_idle_ms, which
    resets Redis's idle time; the age still counts from the dead consumer's read."""
    bus, client = redis_pair
    name = topic("orphan")
    stream = f"{redis_prefix}{name}"
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    await client.xadd(stream, {"data": JsonCodec().encode(Event(name, {"n": 1}))})
    await client.xreadgroup("g", "ghost", {stream: ">"}, count=1)  # read, then never acked
    loop = asyncio.get_running_loop()
    read_at = loop.time()
    started, release = asyncio.Event(), asyncio.Event()

    async def stuck(event: Event) -> None:
        started.set()
        await release.wait()

    await bus.subscribe(name, stuck, group="g")
    await asyncio.wait_for(started.wait(), 10)  # claimed after ~1 s idle
    await asyncio.sleep(1.5)
    stats = await bus.stats(name, "g")
    held_for = loop.time() - read_at
    pending = await client.xpending_range(stream, "g", min="-", max="+", count=1)
    assert int(pending[0]["time_since_delivered"]) < 1000  # claimed, then touched
    assert stats.oldest_pending_age is not None
    assert held_for - 0.5 <= stats.oldest_pending_age <= held_for + 0.5
    assert await client.exists(held_time_key(stream, "g"))
    release.set()

    async def forgotten() -> bool:  # the next heartbeat drops the acked entry's field
        return (await bus.stats(name, "g")).pending == 0 and not await client.exists(
            held_time_key(stream, "g")
        )

    await eventually(forgotten, timeout=10)


@pytest.mark.parametrize("stream", ["orders", "t-1:orders", "{orders}.created", "a{b"])
def test_held_time_hash_shares_the_streams_cluster_slot(stream: str) -> None:
    """The heartbeat's MULTI touches the stream and the hash: one slot on a cluster."""
    assert key_slot(held_time_key(stream, "g").encode()) == key_slot(stream.encode())


async def test_redis_carried_time_outlives_a_consumer_that_closes_mid_handler(
    redis_url: str, redis_prefix: str
) -> None:
    """A consumer closing with a handler still running gives the entry back; the next consumer
    of the group picks it up at once, and the age still counts from the first delivery."""
    config = RedisConfig(url=redis_url, key_prefix=redis_prefix, close_timeout=0.2, **REDIS_TIMING)
    name = topic("handover")
    first, second = create_redis_bus(config), create_redis_bus(config)
    started: list[str] = []
    release = asyncio.Event()

    def holder(label: str) -> Any:
        async def hold(event: Event) -> None:
            started.append(label)
            await release.wait()

        return hold

    try:
        await first.subscribe(name, holder("first"), group="g")
        await first.publish(Event(name, {"n": 1}))
        await eventually(lambda: started == ["first"], timeout=10)
        loop = asyncio.get_running_loop()
        read_at = loop.time()
        await asyncio.sleep(1.0)
        await first.close()  # the handler is cut short: the entry is released to the group
        await second.subscribe(name, holder("second"), group="g")
        await eventually(lambda: started == ["first", "second"], timeout=10)
        await asyncio.sleep(0.5)
        stats = await second.stats(name, "g")
        held_for = loop.time() - read_at
        assert stats.oldest_pending_age is not None
        assert held_for - 0.5 <= stats.oldest_pending_age <= held_for + 0.5
    finally:
        release.set()
        await first.close()
        await second.close()
