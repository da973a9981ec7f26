"""Memory bus throughput against a raw asyncio.Queue carrying the same JSON bytes.

Workload: N events (default 50,000) of a ~100-byte JSON payload, published one by one and
consumed by one subscription (concurrency 1, then 8) whose handler does nothing. The baseline is
what the bus must at least do: orjson-encode each event, pass it through an asyncio.Queue to one
consumer task, decode it. The ratio says what the contract (groups, acks, lanes) costs on top.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from dotmac.events import Event, MemoryConfig, create_memory_bus

PAYLOAD = {"user_id": 123, "name": "John Doe", "email": "john@example.com", "plan": "pro"}


async def raw_queue(n: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
    started = time.perf_counter()

    async def consume() -> None:
        for _ in range(n):
            orjson.loads(await queue.get())

    consumer = asyncio.create_task(consume())
    for i in range(n):
        await queue.put(orjson.dumps({"topic": "bench", "payload": PAYLOAD, "n": i}))
    await consumer
    return time.perf_counter() - started


async def memory_bus(n: int, concurrency: int) -> float:
    bus = create_memory_bus(MemoryConfig(max_queue_size=10_000))
    done = asyncio.Event()
    handled = 0

    async def handler(event: Event) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    await bus.subscribe("bench", handler, group="g", concurrency=concurrency)
    started = time.perf_counter()
    for _ in range(n):
        await bus.publish(Event("bench", PAYLOAD))
    await done.wait()
    elapsed = time.perf_counter() - started
    await bus.close()
    return elapsed


async def main(n: int) -> None:
    baseline = await raw_queue(n)
    rows = [("raw asyncio.Queue + orjson", baseline)]
    for concurrency in (1, 8):
        seconds = await memory_bus(n, concurrency)
        rows.append((f"memory bus, concurrency={concurrency}", seconds))
    print(f"memory bus throughput, {n:,} events, publish then consume end to end")
    print(f"{'run':<32} {'seconds':>8} {'events/s':>10} {'ratio':>6}")
    for name, seconds in rows:
        print(f"{name:<32} {seconds:>8.3f} {n / seconds:>10,.0f} {baseline / seconds:>6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().events))
