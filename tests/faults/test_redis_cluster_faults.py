"""Faults on Redis Cluster: a consumer SIGKILLed mid-handler loses nothing; a master killed and
its replica promoted: publishers get success or PublishError, consumers resume, and what
Redis's asynchronous replication lost is counted and printed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dotmac.events import ConsumerOptions, Event, PublishError, run_consumer
from dotmac.events.adapters.redis_cluster import (
    RedisClusterBus,
    RedisClusterConfig,
    create_redis_cluster_bus,
)
from dotmac.events.codec import JsonCodec
from dotmac.events.testing import wait_until
from tests.support.redis_cluster import LocalCluster, replicas_in_sync

pytestmark = [pytest.mark.redis_cluster, pytest.mark.slow]

PROC = Path(__file__).with_name("redis_cluster_consumer_proc.py")
ROOT = Path(__file__).resolve().parents[2]
EVENTS = 3_000


def config(url: str, prefix: str, **extra: object) -> RedisClusterConfig:
    options: dict[str, object] = {
        "url": url,
        "key_prefix": prefix,
        "partitions": 8,
        "block_ms": 100,
        "claim_idle_ms": 400,
        "claim_interval": 0.1,
        "prefetch_count": 16,
        "publish_timeout": 2.0,
        **extra,
    }
    return RedisClusterConfig(**options)  # type: ignore[arg-type]


@pytest.fixture
async def buses() -> AsyncIterator[list[RedisClusterBus]]:
    created: list[RedisClusterBus] = []
    yield created
    for bus in created:
        await bus.close(timeout=2.0)


@pytest.fixture
def victim(redis_cluster_url: str, redis_prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [redis_cluster_url, redis_prefix, "crash", "workers", "victim"]
    proc = subprocess.Popen([sys.executable, str(PROC), *args], stdout=subprocess.PIPE, env=env)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def test_sigkill_mid_handler_loses_nothing(
    redis_cluster_url: str,
    redis_prefix: str,
    victim: subprocess.Popen[bytes],
    buses: list[RedisClusterBus],
) -> None:
    bus = create_redis_cluster_bus(config(redis_cluster_url, redis_prefix))
    buses.append(bus)
    raw = bus.client
    for start in range(0, EVENTS, 500):
        await bus.publish_many(
            [Event("crash", n, key=f"k{n % 50}") for n in range(start, start + 500)]
        )
    assert victim.stdout is not None
    assert (await asyncio.to_thread(victim.stdout.readline)).strip() == b"ready"
    started_key, handled_key = f"{{{redis_prefix}}}started", f"{{{redis_prefix}}}handled"
    deadline = time.monotonic() + 30
    while await raw.llen(handled_key) < 600 or await raw.llen(started_key) <= await raw.llen(
        handled_key
    ):
        assert time.monotonic() < deadline, "the victim made no progress"
        await asyncio.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    codec = JsonCodec()
    held: set[int] = set()
    for stream in bus.streams("crash"):  # what the dead consumer held, partition by partition
        for info in await raw.xpending_range(
            stream, "workers", min="-", max="+", count=1000, consumername="victim"
        ):
            _, fields = (await raw.xrange(stream, min=info["message_id"], max=info["message_id"]))[
                0
            ]
            held.add(codec.decode(fields[b"data"]).payload)
    started_a = Counter(int(x) for x in await raw.lrange(started_key, 0, -1))
    handled_a = Counter(int(x) for x in await raw.lrange(handled_key, 0, -1))
    in_handler = set(started_a) - set(handled_a)
    assert in_handler, "the kill did not land mid-handler"
    assert in_handler <= held

    handled_b: Counter[int] = Counter()
    redelivered: dict[int, int] = {}

    async def finish(event: Event) -> None:
        handled_b[event.payload] += 1
        if event.delivery_count > 1:
            redelivered[event.payload] = event.delivery_count

    await run_consumer(bus, "crash", finish, ConsumerOptions(max_retries=3), group="workers")
    everything = set(range(EVENTS))
    await wait_until(lambda: set(handled_a) | set(handled_b) >= everything, 30, "all events")
    await wait_until(lambda: set(redelivered) >= held, 10, "the dead one's entries")
    stats = await bus.stats("crash", "workers")
    total = handled_a + handled_b
    lost = everything - set(total)
    duplicates = {n for n, c in total.items() if c > 1}
    print(
        "\ncrash test (SIGKILL mid-handler, redis cluster, 3 masters, 8 partitions)\n"
        f"  events published        {EVENTS}\n"
        f"  handled by the victim   {sum(handled_a.values())}\n"
        f"  handled by the survivor {sum(handled_b.values())}\n"
        f"  held by victim at kill  {len(held)} (in a handler: {len(in_handler)})\n"
        f"  redelivered (count > 1) {len(redelivered)}\n"
        f"  handled twice           {len(duplicates)}\n"
        f"  lost                    {len(lost)}"
    )
    assert not lost
    assert duplicates <= held
    assert set(redelivered) == held and min(redelivered.values()) == 2  # true counts
    assert stats.lag == 0 and stats.length == EVENTS


async def test_master_failover_publishers_and_consumers_carry_on() -> None:
    """SIGKILL one master of 3 (each with a replica) under load, and count what happens."""
    with LocalCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        await asyncio.to_thread(replicas_in_sync, cluster, 15.0)
        costs = [await _publish_latency(cluster.url, wait) for wait in (0, 1)]
        print(
            f"\npublish latency, one event at a time: {costs[0]:.0f} us without WAIT, "
            f"{costs[1]:.0f} us with publish_wait_replicas=1"
        )
        bus = create_redis_cluster_bus(config(cluster.url, "failover:"))
        try:
            await _failover(cluster, bus)
        finally:
            await bus.close(timeout=2.0)


async def _publish_latency(url: str, wait: int) -> float:
    bus = create_redis_cluster_bus(config(url, f"cost{wait}:", publish_wait_replicas=wait))
    try:
        await bus.publish(Event("cost", -1))
        start = time.perf_counter()
        for n in range(300):
            await bus.publish(Event("cost", n, key=str(n)))
        return (time.perf_counter() - start) / 300 * 1e6
    finally:
        await bus.close()


async def _failover(cluster: LocalCluster, bus: RedisClusterBus) -> None:
    received: set[int] = set()
    resumed_at: list[float] = []
    killed_at: list[float] = []

    async def handle(event: Event) -> None:
        received.add(event.payload)
        if killed_at and not resumed_at:
            resumed_at.append(time.monotonic())

    await run_consumer(bus, "load", handle, ConsumerOptions(max_retries=3), group="g")
    acked: list[int] = []
    failed: list[tuple[int, PublishError]] = []
    unexpected: list[BaseException] = []
    stop = asyncio.Event()

    async def publish(lane: int) -> None:
        n = lane
        while not stop.is_set():
            try:
                await bus.publish(Event("load", n, key=f"k{n % 64}"))
                acked.append(n)
            except PublishError as exc:
                failed.append((n, exc))
                await asyncio.sleep(0.05)
            except BaseException as exc:  # anything but PublishError fails the test
                unexpected.append(exc)
                raise
            n += 4

    publishers = [asyncio.create_task(publish(k)) for k in range(4)]
    await wait_until(lambda: len(received) >= 2_000, 30, "load before the kill")
    victim = cluster.master_ports()[0]
    before = len(acked)
    killed_at.append(time.monotonic())
    cluster.kill(victim)
    await asyncio.to_thread(cluster.wait_promoted, 3, 30.0)
    promoted_after = time.monotonic() - killed_at[0]
    await wait_until(lambda: len(acked) >= before + 2_000, 30, "publishing after failover")
    stop.set()
    await asyncio.gather(*publishers)
    assert not unexpected
    for _ in range(200):  # up to 20 s; what never arrives is the loss counted below
        if not set(acked) - received:
            break
        await asyncio.sleep(0.1)
    lost = sorted(set(acked) - received)
    first_failure = min((n for n, _ in failed), default=None)
    print(
        "\nfailover test (3 masters + 3 replicas, node timeout 1 s, 4 publishers, "
        "SIGKILL one master)\n"
        f"  publishes acknowledged      {len(acked)}\n"
        f"  publishes that raised       {len(failed)} (PublishError)\n"
        f"  cluster ok again after      {promoted_after:.2f} s\n"
        f"  first event handled after  {(resumed_at or [float('nan')])[0] - killed_at[0]:.2f} s\n"
        f"  acknowledged but lost       {len(lost)} (async replication) {lost[:10]}\n"
        f"  first failed publish        #{first_failure} of the {before} acked before the kill"
    )
    assert resumed_at, "consumers did not resume after the failover"
    assert len(lost) < 200  # what the replica had not received when its master died


async def test_wait_without_replicas_raises_publish_error(
    redis_cluster_url: str, redis_prefix: str
) -> None:
    """The harness cluster has no replicas: WAIT 1 can never be satisfied, so a publish is
    written but reported as not replicated."""
    extra = {"publish_wait_replicas": 1, "publish_wait_timeout_ms": 20}
    bus = create_redis_cluster_bus(config(redis_cluster_url, redis_prefix, **extra))
    try:
        with pytest.raises(PublishError, match="fewer than 1 replica") as caught:
            await bus.publish(Event("w", 1, key="a"))
        assert caught.value.may_have_been_written
        assert (await bus.stats("w")).length == 1
    finally:
        await bus.close()
