"""Reading the log back, per transport, beyond the conformance suite: Redis paging and foreign
entries, Kafka partitions and headers, and that reading never creates a consumer group."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from dotmac.events import (
    ConfigurationError,
    Event,
    MemoryConfig,
    RedisConfig,
    create_memory_bus,
    create_redis_bus,
)
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.adapters.redis.reader import PAGE
from dotmac.events.testing import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic


async def test_memory_follow_ends_when_the_bus_closes() -> None:
    bus = create_memory_bus()
    seen: list[int] = []

    async def follow() -> None:
        async for event in bus.read("t", follow=True):
            seen.append(event.payload)  # noqa: PERF401 - watched as it grows

    reading = asyncio.create_task(follow())
    await bus.publish(Event("t", 1))
    await asyncio.sleep(0.05)
    await bus.close()
    await asyncio.wait_for(reading, 3)  # the next idle tick sees the closed bus
    assert seen == [1]


async def test_memory_reads_only_what_is_held_and_times_bisect() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=5))  # no group: the newest 5 are kept
    for n in range(8):
        await bus.publish(Event("t", n))
        await asyncio.sleep(0.002)
    records = [r async for r in bus.read_records("t")]
    assert [r.event.payload for r in records if r.event] == [3, 4, 5, 6, 7]
    assert [r.position for r in records] == ["3", "4", "5", "6", "7"]
    moment = records[2].timestamp
    assert moment is not None
    assert [e.payload async for e in bus.read("t", since=moment)] == [5, 6, 7]
    assert [e.payload async for e in bus.read("t", since="0")] == [3, 4, 5, 6, 7]
    with pytest.raises(ConfigurationError, match="until"):
        [e async for e in bus.read("t", until="3-0")]
    await bus.close()


@pytest.mark.redis
async def test_redis_reads_in_pages_with_foreign_entries_and_joins_no_group(
    redis_url: str, redis_prefix: str
) -> None:
    bus = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix))
    raw = Redis.from_url(redis_url)
    stream = bus.stream_key("big")
    try:
        total = PAGE * 2 + 7
        await bus.publish_many([Event("big", n) for n in range(total - 1)])
        await raw.xadd(stream, {"legacy": b"<x/>", "other": b"1"})
        records = [r async for r in bus.read_records("big")]
        assert len(records) == total
        assert [r.event.payload for r in records[:-1] if r.event] == list(range(total - 1))
        foreign = records[-1]
        assert foreign.event is None and foreign.error is not None
        assert "no 'data' field" in str(foreign.error) and b"<x/>" in foreign.data
        middle = records[PAGE].position
        tail = [e.payload async for e in bus.read("big", since=middle, until=records[-2].position)]
        assert tail == list(range(PAGE + 1, total - 1))
        assert [e.payload async for e in bus.read("big", limit=3)] == [0, 1, 2]
        assert await raw.xinfo_groups(stream) == []  # reading joined no group
        with pytest.raises(ConfigurationError, match="since"):
            [e async for e in bus.read("big", since="12")]
    finally:
        await raw.aclose()
        await bus.close()


@pytest.mark.kafka
async def test_kafka_reads_every_partition_and_positions_name_one(kafka_bootstrap: str) -> None:
    config = kafka_test_config(kafka_bootstrap, num_partitions=3)
    bus = create_kafka_bus(config)
    topic = unique_topic("readparts")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        groups_before = {g[0] for g in await admin.list_consumer_groups()}
        for n in range(30):
            await bus.publish(Event(topic, {"n": n}, key=f"k{n % 6}", headers={"h": str(n)}))
        records = [r async for r in bus.read_records(topic)]
        assert sorted(r.event.payload["n"] for r in records if r.event) == list(range(30))
        by_partition: dict[str, list[int]] = {}
        for record in records:
            partition, _, offset = record.position.partition(":")
            by_partition.setdefault(partition, []).append(int(offset))
            assert record.timestamp is not None and record.timestamp <= datetime.now(UTC)
            assert ("dotmac-event-id", str(record.event.id).encode()) in record.headers  # type: ignore[union-attr]
        assert len(by_partition) > 1
        assert all(offsets == sorted(offsets) for offsets in by_partition.values())
        partition, offsets = next(iter(by_partition.items()))
        after = [
            r.position async for r in bus.read_records(topic, since=f"{partition}:{offsets[0]}")
        ]
        assert after == [f"{partition}:{o}" for o in offsets[1:]]
        with pytest.raises(ConfigurationError, match="no partition 9"):
            [e async for e in bus.read(topic, since="9:0")]
        assert await bus.replay(topic, lambda event: None, limit=7) == 7
        groups_after = {g[0] for g in await admin.list_consumer_groups()}
        assert groups_after == groups_before  # reading joined no group
    finally:
        await admin.close()
        await bus.close()


@pytest.mark.redis
async def test_redis_follower_reads_on_after_its_connection_is_killed(
    redis_url: str, redis_prefix: str
) -> None:
    config = RedisConfig(
        url=redis_url, key_prefix=redis_prefix, block_ms=200, reconnect_backoff_base_ms=50
    )
    bus = create_redis_bus(config)
    raw = Redis.from_url(redis_url)
    seen: list[int] = []

    async def follow() -> None:
        async for event in bus.read("cut", follow=True, limit=2):
            seen.append(event.payload)  # noqa: PERF401 - watched as it grows

    reading = asyncio.create_task(follow())
    try:
        await bus.publish(Event("cut", 1))
        await wait_until(lambda: seen == [1], 10, "the first event")
        killed = await raw.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        await bus.publish(Event("cut", 2))
        await asyncio.wait_for(reading, 10)
        assert seen == [1, 2]
    finally:
        reading.cancel()
        await raw.aclose()
        await bus.close()
