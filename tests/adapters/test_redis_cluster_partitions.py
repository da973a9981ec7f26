"""Redis Cluster partitions: a key always lands on one partition, in order; a topic's
partitions spread over every master; the fetch budget; config and URL checks."""

from __future__ import annotations

import pytest

from dotmac.events import ConfigurationError, Event
from dotmac.events.adapters.redis_cluster import (
    RedisClusterBus,
    RedisClusterConfig,
    create_redis_cluster_bus,
)
from dotmac.events.adapters.redis_cluster.partitions import PartitionMap, topic_of_key
from dotmac.events.adapters.redis_cluster.receiver import shares
from dotmac.events.urls import parse_bus_url


async def _bus(url: str, prefix: str, partitions: int) -> RedisClusterBus:
    return create_redis_cluster_bus(
        RedisClusterConfig(url=url, key_prefix=prefix, partitions=partitions)
    )


@pytest.mark.redis_cluster
async def test_a_key_always_lands_on_one_partition_in_publish_order(
    redis_cluster_url: str, redis_prefix: str
) -> None:
    bus = await _bus(redis_cluster_url, redis_prefix, 8)
    try:
        for n in range(200):
            await bus.publish(Event("keyed", n, key=f"customer-{n % 20}"))
        await bus.publish_many([Event("keyed", 200 + n, key="customer-3") for n in range(50)])
        seen: dict[str, list[tuple[int, int]]] = {}
        async for record in bus.read_records("keyed"):
            assert record.event is not None and record.key is not None
            partition = int(record.position.partition(":")[0])  # "partition:entry-id"
            seen.setdefault(record.key, []).append((partition, record.event.payload))
        assert len(seen) == 20
        for key, places in seen.items():
            assert len({p for p, _ in places}) == 1, f"{key} on several partitions"
            payloads = [n for _, n in places]
            assert payloads == sorted(payloads), f"{key} out of order"
            assert bus.partition_of(Event("keyed", None, key=key)) == places[0][0]
        used = {places[0][0] for places in seen.values()}
        assert len(used) > 4  # 20 keys over 8 partitions: CRC32 spreads them
    finally:
        await bus.close()


@pytest.mark.redis_cluster
@pytest.mark.parametrize("partitions", [4, 6, 16])
async def test_partitions_spread_over_every_master(
    redis_cluster_url: str, redis_prefix: str, partitions: int
) -> None:
    bus = await _bus(redis_cluster_url, redis_prefix, partitions)
    try:
        await bus.publish_many([Event("spread", n) for n in range(partitions)])  # round-robin
        figures = await bus.partition_stats("spread")
        masters = {node.name for node in bus.client.get_primaries()}
        assert len(masters) == 3
        assert [f.partition for f in figures] == list(range(partitions))
        assert {f.node for f in figures} == masters
        counts = [sum(f.node == m for f in figures) for m in masters]
        assert max(counts) - min(counts) <= max(1, partitions // 8)
        assert all(f.length == 1 for f in figures)  # keyless events go round-robin
        total = await bus.stats("spread")
        assert total.length == partitions
    finally:
        await bus.close()


def test_partition_keys_do_not_depend_on_the_count() -> None:
    """Growing a topic keeps its streams; each key names its topic and partition."""
    small, large = PartitionMap("app:").streams("t", 4), PartitionMap("app:").streams("t", 32)
    assert large[:4] == small
    assert len(set(large)) == 32
    assert [topic_of_key("app:", k) for k in small] == [("t", n) for n in range(4)]
    assert topic_of_key("app:", "app:{t/1}:delayed") is None
    with pytest.raises(ConfigurationError) as caught:
        PartitionMap("").streams("a{b}", 2)
    assert caught.value.field == "topic"


def test_the_fetch_budget_goes_to_partitions_that_had_more() -> None:
    assert shares(16, [True] * 4, 0) == [4, 4, 4, 4]
    assert shares(100, [False, True, False, False], 0) == [1, 97, 1, 1]
    assert sum(shares(10, [True, True, True], 1)) == 10
    assert shares(2, [True] * 4, 3) == [1, 0, 0, 1]  # fewer than partitions: take turns
    assert shares(7, [False] * 4, 0) == [2, 2, 2, 1]  # nothing known: all share


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("partitions", {"partitions": 0}),
        ("partitions", {"partitions": 5000}),
        ("topic_partitions", {"topic_partitions": {"orders": 0}}),
        ("key_prefix", {"key_prefix": "app{1}:"}),
        ("db", {"db": 2}),
        ("url", {"url": "redis+cluster://h1:7000,h2:notaport"}),
        ("url", {"url": "http://h1:7000"}),
        ("idle_poll_ms", {"idle_poll_ms": 0}),
        ("publish_wait_replicas", {"publish_wait_replicas": -1}),
    ],
)
def test_bad_cluster_settings_name_the_field(field: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisClusterConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_cluster_urls() -> None:
    config = parse_bus_url("redis+cluster://app:s3cret@h1:7000,h2:7001?partitions=32")
    assert isinstance(config, RedisClusterConfig)
    assert config.startup_nodes() == [("h1", 7000), ("h2", 7001)]
    assert config.partitions_of("any") == 32 and config.secrets == ("s3cret",)
    assert "s3cret" not in repr(config) and "s3cret" not in config.describe_target()
    assert RedisClusterConfig(topic_partitions={"big": 64}).partitions_of("big") == 64
    with pytest.raises(ConfigurationError) as caught:
        parse_bus_url("redis+cluster://h1:7000/2")
    assert caught.value.field == "url"
