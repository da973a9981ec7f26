"""A consumer process on Redis Cluster for the crash test: killed with SIGKILL, so it records
into the cluster (the lists ``{PREFIX}started`` and ``{PREFIX}handled``, one slot).

Usage: python redis_cluster_consumer_proc.py URL PREFIX TOPIC GROUP CONSUMER_NAME

Handlers take a short await; after 600 finished, new ones hang until the process is killed, so
the kill lands mid-handler. Prints ``ready`` once subscribed.
"""

from __future__ import annotations

import asyncio
import sys

from dotmac.events import ConsumerOptions, Event, run_consumer
from dotmac.events.adapters.redis_cluster import RedisClusterConfig, create_redis_cluster_bus


async def main(url: str, prefix: str, topic: str, group: str, name: str) -> None:
    config = RedisClusterConfig(
        url=url,
        key_prefix=prefix,
        partitions=8,
        block_ms=100,
        claim_idle_ms=400,
        claim_interval=0.1,
        consumer_name=name,
        prefetch_count=16,
    )
    bus = create_redis_cluster_bus(config)
    record = bus.client
    finished = 0

    async def work(event: Event) -> None:
        nonlocal finished
        await record.rpush(f"{{{prefix}}}started", event.payload)
        await asyncio.sleep(0.01 if finished < 600 else 60)
        await record.rpush(f"{{{prefix}}}handled", event.payload)
        finished += 1

    await run_consumer(bus, topic, work, ConsumerOptions(max_retries=3), group=group, concurrency=8)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
