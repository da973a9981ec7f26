"""Redis Cluster (3 masters): RedisClusterBus with its defaults against raw redis-py RedisCluster.

Topics have the bus's default 16 partitions. The raw sides write the same partition streams
(``PartitionMap``, so both sides put the same streams on the same masters) and pick a partition
the same way (``crc32(key) % 16``); what differs is the code around the commands. Every side
gets a fresh topic, its own client or bus, and learns the slot map before the clock starts.

* consume: N events pre-filled, then ``run_consumer`` with default ``ConsumerOptions``
  (concurrency 1), timed from the first to the last handler call. Baseline: one cluster
  pipeline per round of ``XACK`` (the previous round's ids) + ``XREADGROUP COUNT 100`` on each
  partition (redis-py sends it as a round trip per master, in parallel), ``orjson.loads`` and
  the same handler, 1 ms of sleep after a round that found nothing. The bus's default
  ``prefetch_count`` (1,600: 100 a partition) is what the baseline may read in a round.
* publish: awaited ``publish`` one at a time vs awaited ``XADD``; ``publish_many`` of 100 vs a
  cluster pipeline of 100 ``XADD``.
* spread: N events keyed by the payload's customer id (9,973 keys, as entity ids are), then the
  events on each partition and each master (``partition_stats``: XLEN and the master holding
  each stream). The value is the busiest master's events over the mean (1.0 is even). Baseline:
  the same partitioner over streams named ``<topic>:<p>``, left where their CRC16 puts them.

On one 2-core machine the three masters share the cores with the client, so these rows measure
the overhead of partitioning and its balance, not scaling (see adapters/redis/README.md).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio.cluster import ClusterNode, RedisCluster

from benchmarks.common import (
    Comparison,
    Detail,
    Row,
    Sample,
    Settings,
    Tally,
    events,
    fresh,
    key,
    payload,
    raw_envelope,
)
from dotmac.events import ConsumerOptions, Event, run_consumer
from dotmac.events.adapters import create_redis_cluster_bus
from dotmac.events.adapters.redis_cluster import RedisClusterBus, RedisClusterConfig
from dotmac.events.adapters.redis_cluster.partitions import PartitionMap

__all__ = ["comparisons"]

PARTITIONS = RedisClusterConfig().partitions
MAXLEN = RedisClusterConfig().max_stream_length
FILL_CHUNK = 500
BATCH = 100
SPREAD = "cluster.spread_masters"
PREFETCH = RedisClusterConfig().prefetch_count
RAW_CONSUME = (
    f"RedisCluster pipeline per round: XACK + XREADGROUP COUNT {BATCH} per partition, "
    "loads + handler"
)


def config(s: Settings, **tuning: Any) -> RedisClusterConfig:
    return RedisClusterConfig(url=s.cluster_url, **tuning)


def bus_of(s: Settings, **tuning: Any) -> RedisClusterBus:
    return create_redis_cluster_bus(config(s, **tuning))


async def raw_client(s: Settings) -> RedisCluster:
    nodes = [ClusterNode(host, port) for host, port in config(s).startup_nodes()]
    client = RedisCluster(startup_nodes=nodes)
    await client.initialize()
    return client


def partition(k: str) -> int:
    """What a raw user writes to keep a key's events in one stream."""
    return zlib.crc32(k.encode()) % PARTITIONS


def raw_fields(topic: str, i: int, k: str | None = None) -> dict[bytes, bytes]:
    return {b"data": orjson.dumps(raw_envelope(topic, i)), b"key": (k or key(i)).encode()}


async def drop(s: Settings, topic: str) -> None:
    """Delete every key of ``topic`` (streams, held-time hashes, delayed sets) on every master."""
    client = await raw_client(s)
    try:
        found = [k async for k in client.scan_iter(match=f"*{topic}*", count=1000)]
        if found:
            pipe = client.pipeline(transaction=False)
            for k in found:
                pipe.delete(k)
            await pipe.execute()
    finally:
        await client.aclose()


async def ours_consume(s: Settings, row: str, **tuning: Any) -> Sample:
    n = s.cluster_events
    topic = fresh("consume")
    bus = bus_of(s, **tuning)
    tally = Tally(n)
    try:
        for start in range(0, n, FILL_CHUNK):
            await bus.publish_many(events(topic, start, min(start + FILL_CHUNK, n)))
        await run_consumer(bus, topic, tally, ConsumerOptions(), group="bench")
        await tally.done.wait()
        return {row: tally.rate()}
    finally:
        await bus.close()
        await drop(s, topic)


async def raw_consume(s: Settings, row: str) -> Sample:
    n = s.cluster_events
    topic = fresh("consume")
    streams = PartitionMap("").streams(topic, PARTITIONS)
    client = await raw_client(s)
    tally = Tally(n)
    try:
        for start in range(0, n, FILL_CHUNK):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + FILL_CHUNK, n)):
                stream = streams[partition(key(i))]
                pipe.xadd(stream, raw_fields(topic, i), maxlen=MAXLEN, approximate=True)
            await pipe.execute()
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xgroup_create(stream, "bench", id="0", mkstream=True)
        await pipe.execute()
        acks: dict[str, list[bytes]] = {}
        while tally.count < n:
            pipe = client.pipeline(transaction=False)
            for stream, ids in acks.items():
                pipe.xack(stream, "bench", *ids)
            for stream in streams:
                pipe.xreadgroup("bench", "raw", {stream: ">"}, count=BATCH)
            replies = (await pipe.execute())[len(acks) :]
            acks = {}
            for reply in replies:
                for name, entries in reply or []:
                    for entry_id, fields in entries:
                        await tally(orjson.loads(fields[b"data"]))
                        acks.setdefault(name.decode(), []).append(entry_id)
            if not acks:
                await asyncio.sleep(0.001)
        return {row: tally.rate()}
    finally:
        await client.aclose()
        await drop(s, topic)


async def ours_publish_awaited(s: Settings) -> Sample:
    n = s.publish_events
    topic = fresh("publish")
    bus = bus_of(s)
    try:
        await bus.health()  # connects, learns the slot map
        started = time.perf_counter()
        for i in range(n):
            await bus.publish(Event(topic, payload(i), key=key(i)))
        return {"cluster.publish_awaited": n / (time.perf_counter() - started)}
    finally:
        await bus.close()
        await drop(s, topic)


async def raw_publish_awaited(s: Settings) -> Sample:
    n = s.publish_events
    topic = fresh("publish")
    streams = PartitionMap("").streams(topic, PARTITIONS)
    client = await raw_client(s)
    try:
        started = time.perf_counter()
        for i in range(n):
            stream = streams[partition(key(i))]
            await client.xadd(stream, raw_fields(topic, i), maxlen=MAXLEN, approximate=True)
        return {"cluster.publish_awaited": n / (time.perf_counter() - started)}
    finally:
        await client.aclose()
        await drop(s, topic)


async def ours_publish_many(s: Settings) -> Sample:
    n = s.cluster_events
    topic = fresh("publish-many")
    bus = bus_of(s)
    try:
        await bus.health()
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await bus.publish_many(events(topic, start, min(start + BATCH, n)))
        return {"cluster.publish_many": n / (time.perf_counter() - started)}
    finally:
        await bus.close()
        await drop(s, topic)


async def raw_publish_many(s: Settings) -> Sample:
    n = s.cluster_events
    topic = fresh("publish-many")
    streams = PartitionMap("").streams(topic, PARTITIONS)
    client = await raw_client(s)
    try:
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + BATCH, n)):
                stream = streams[partition(key(i))]
                pipe.xadd(stream, raw_fields(topic, i), maxlen=MAXLEN, approximate=True)
            await pipe.execute()
        return {"cluster.publish_many": n / (time.perf_counter() - started)}
    finally:
        await client.aclose()
        await drop(s, topic)


class Spread:
    """Events per partition and per master of each side's last keyed run, for the Detail."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}

    def note(self, side: str, counts: list[int], nodes: list[str], masters: list[str]) -> Sample:
        per_master = Counter({m: 0 for m in masters})
        partitions = Counter({m: 0 for m in masters})
        for count, node in zip(counts, nodes, strict=True):
            per_master[node] += count
            partitions[node] += 1
        self.last[side] = {
            "events_per_partition": counts,
            "master_of_partition": nodes,
            "events_per_master": dict(per_master),
            "partitions_per_master": dict(partitions),
        }
        mean = sum(counts) / len(masters)
        return {SPREAD: max(per_master.values()) / mean}

    def detail(self) -> Detail:
        lines = []
        for side, label in (("ours", "ours (slot-chosen tags)"), ("baseline", "`<topic>:<p>`")):
            got = self.last.get(side)
            if got is None:
                continue
            counts = got["events_per_partition"]
            names = sorted(got["events_per_master"])
            masters = ", ".join(
                f"{chr(65 + n)} {got['events_per_master'][m]:,} ({got['partitions_per_master'][m]}"
                " partitions)"
                for n, m in enumerate(names)
            )
            mean = statistics.mean(counts)
            lines += [
                f"- {label}: per master {masters}",
                f"  per partition {', '.join(f'{c:,}' for c in counts)} (busiest "
                f"{max(counts) / mean:.2f}x the mean, emptiest {min(counts) / mean:.2f}x)",
            ]
        return Detail(
            title="Redis Cluster: events per master and per partition, last keyed run",
            data=self.last,
            lines=lines,
        )


def customer(i: int) -> str:
    return str(payload(i)["customer_id"])


async def ours_spread(s: Settings, spread: Spread) -> Sample:
    n = s.cluster_events
    topic = fresh("spread")
    bus = bus_of(s)
    try:
        for start in range(0, n, BATCH):
            stop = min(start + BATCH, n)
            await bus.publish_many(
                [Event(topic, payload(i), key=customer(i)) for i in range(start, stop)]
            )
        parts = await bus.partition_stats(topic)
        masters = [node.name for node in bus.client.get_primaries()]
        return spread.note(
            "ours", [p.length for p in parts], [p.node or "?" for p in parts], masters
        )
    finally:
        await bus.close()
        await drop(s, topic)


async def raw_spread(s: Settings, spread: Spread) -> Sample:
    n = s.cluster_events
    topic = fresh("spread")
    streams = [f"{topic}:{p}" for p in range(PARTITIONS)]
    client = await raw_client(s)
    try:
        for start in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + BATCH, n)):
                k = customer(i)
                pipe.xadd(
                    streams[partition(k)], raw_fields(topic, i, k), maxlen=MAXLEN, approximate=True
                )
            await pipe.execute()
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
        counts = [int(c) for c in await pipe.execute()]
        nodes = [str(getattr(client.get_node_from_key(s), "name", "?")) for s in streams]
        masters = [node.name for node in client.get_primaries()]
        return spread.note("baseline", counts, nodes, masters)
    finally:
        await client.aclose()
        await drop(s, topic)


def _pair(
    row: Row, ours: Callable[[], Awaitable[Sample]], raw: Callable[[], Awaitable[Sample]]
) -> Comparison:
    return Comparison(rows=(row,), ours=ours, baseline=raw)


def comparisons(s: Settings) -> list[Comparison]:
    spread = Spread()
    return [
        _pair(
            Row(
                id="cluster.consume_c1",
                path=f"redis cluster, 3 masters, {PARTITIONS} partitions: consume, default "
                f"ConsumerOptions, concurrency 1 (prefetch_count {PREFETCH})",
                baseline=RAW_CONSUME,
                unit="ev/s",
                target=None,
            ),
            lambda: ours_consume(s, "cluster.consume_c1"),
            lambda: raw_consume(s, "cluster.consume_c1"),
        ),
        _pair(
            Row(
                id="cluster.publish_awaited",
                path="redis cluster: awaited publish, one at a time",
                baseline="RedisCluster awaited XADD to the key's partition, one at a time",
                unit="ev/s",
                target=None,
            ),
            lambda: ours_publish_awaited(s),
            lambda: raw_publish_awaited(s),
        ),
        _pair(
            Row(
                id="cluster.publish_many",
                path=f"redis cluster: publish_many, batches of {BATCH}",
                baseline=f"RedisCluster pipeline of {BATCH} XADD (a round trip per master)",
                unit="ev/s",
                target=None,
            ),
            lambda: ours_publish_many(s),
            lambda: raw_publish_many(s),
        ),
        Comparison(
            rows=(
                Row(
                    id=SPREAD,
                    path="redis cluster: busiest master's events / mean, 9,973 keys over "
                    f"{PARTITIONS} partitions",
                    baseline="the same partitioner over streams `<topic>:<p>`, where CRC16 "
                    "puts them; lower is better",
                    unit="x mean",
                    target=None,
                    better="lower",
                ),
            ),
            ours=lambda: ours_spread(s, spread),
            baseline=lambda: raw_spread(s, spread),
            details=spread.detail,
        ),
    ]
