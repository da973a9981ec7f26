"""A consumer process for the crash tests: it gets killed with SIGKILL, so it records into Redis.

Usage: python redis_consumer_proc.py URL PREFIX TOPIC GROUP MODE CONSUMER_NAME

MODE ``work``: handle events (a short await mid-handler), RPUSH the payload to PREFIX+"started"
when a handler starts and to PREFIX+"handled" when it finishes; after 1,000 handlers finished,
new ones hang until the process is killed.
MODE ``fail``: RPUSH the delivery count to PREFIX+"attempts", then raise (run_consumer with
max_retries=3 and a backoff far longer than the test, so the retry never happens here).
Prints ``ready`` once subscribed, then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as redis_asyncio

from dotmac.events import ConsumerOptions, Event, RedisConfig, create_redis_bus, run_consumer


async def main(url: str, prefix: str, topic: str, group: str, mode: str, name: str) -> None:
    config = RedisConfig(
        url=url,
        key_prefix=prefix,
        block_ms=100,
        claim_idle_ms=400,
        claim_interval=0.1,
        consumer_name=name,
        prefetch_count=16,
    )
    bus = create_redis_bus(config)
    record = redis_asyncio.Redis.from_url(url)

    finished = 0

    async def work(event: Event) -> None:
        nonlocal finished
        await record.rpush(f"{prefix}started", event.payload)
        # After 1,000 events handlers hang, so the kill surely lands mid-handler.
        await asyncio.sleep(0.02 if finished < 1_000 else 60)
        await record.rpush(f"{prefix}handled", event.payload)
        finished += 1

    async def fail(event: Event) -> None:
        await record.rpush(f"{prefix}attempts", event.delivery_count)
        raise RuntimeError(f"always fails (attempt {event.delivery_count})")

    if mode == "work":
        await run_consumer(
            bus, topic, work, ConsumerOptions(max_retries=3), group=group, concurrency=8
        )
    else:
        options = ConsumerOptions(
            max_retries=3, backoff_base_ms=60_000, backoff_max_delay_ms=60_000, jitter=False
        )
        await run_consumer(bus, topic, fail, options, group=group)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
