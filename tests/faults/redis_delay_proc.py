"""A process for the delayed-delivery restart test; it is killed with SIGKILL.

Usage: python redis_delay_proc.py URL PREFIX publish START COUNT
       python redis_delay_proc.py URL PREFIX consume NAME

``publish``: publish COUNT events to ``reminders``, event n due at START + 1 + n * 0.2 (Unix
time), print ``published`` once every publish returned, then wait to be killed.
``consume``: handle ``reminders`` in group ``g``, RPUSH ``n due arrived`` to PREFIX+"arrivals"
for each event, print ``ready`` once subscribed, then run until killed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

import redis.asyncio as redis_asyncio

from dotmac.events import Event, RedisConfig, create_redis_bus


async def main(url: str, prefix: str, mode: str, *args: str) -> None:
    config = RedisConfig(
        url=url,
        key_prefix=prefix,
        block_ms=100,
        claim_idle_ms=600,
        claim_interval=0.2,
        delay_poll_interval=0.5,
    )
    bus = create_redis_bus(config)
    if mode == "publish":
        start, count = float(args[0]), int(args[1])
        for n in range(count):
            due = start + 1 + n * 0.2
            event = Event("reminders", {"n": n, "due": due}, key=f"k{n % 3}")
            await bus.publish(event, at=datetime.fromtimestamp(due, UTC))
        print("published", flush=True)
    else:
        record = redis_asyncio.Redis.from_url(url)

        async def handle(event: Event) -> None:
            line = f"{event.payload['n']} {event.payload['due']} {time.time()}"
            await record.rpush(f"{prefix}arrivals", line)

        await bus.subscribe("reminders", handle, group="g")
        print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
