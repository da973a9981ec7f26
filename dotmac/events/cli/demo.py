"""``dotmac-events demo``: an end-to-end run on the memory bus with retries and dead letters."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from dotmac.events.adapters.memory import MemoryConfig, create_memory_bus
from dotmac.events.consumer import ConsumerOptions, run_consumer
from dotmac.events.dlq import DLQEntry, create_dlq_consumer
from dotmac.events.event import Event
from dotmac.events.observability.collector import MetricsCollector

__all__ = ["print_summary", "run_demo"]


async def run_demo(events: int = 300, concurrency: int = 4) -> dict[str, int | float]:
    """Publish ``events`` orders; every 10th fails once, every 50th always fails."""
    collector = MetricsCollector()
    bus = create_memory_bus(MemoryConfig(max_queue_size=1_000), observer=collector)
    outcome: Counter[str] = Counter()
    dead: list[DLQEntry] = []
    done = asyncio.Event()

    async def handle_order(event: Event) -> None:
        n = event.payload["order"]
        if n % 50 == 0:
            raise ValueError(f"order {n} has no customer")
        if n % 10 == 0 and event.delivery_count == 1:
            raise ConnectionError("payment service busy")
        outcome["handled"] += 1
        _check(outcome, dead, events, done)

    async def on_dead_letter(entry: DLQEntry) -> None:
        dead.append(entry)
        _check(outcome, dead, events, done)

    started = time.perf_counter()
    async with bus:
        options = ConsumerOptions(max_retries=2, backoff_base_ms=20, dlq_topic="orders.DLQ")
        await run_consumer(
            bus, "orders", handle_order, options, group="billing", concurrency=concurrency
        )
        await create_dlq_consumer(bus, "orders.DLQ", on_dead_letter, group="ops")
        await bus.publish_many(
            [Event("orders", {"order": n}, key=f"customer-{n % 17}") for n in range(1, events + 1)]
        )
        await asyncio.wait_for(done.wait(), timeout=30)
    elapsed = time.perf_counter() - started
    return {
        "published": events,
        "handled": outcome["handled"],
        "retried": collector.report().topics["orders"].retried,
        "dead_lettered": len(dead),
        "attempts_per_dead_letter": dead[0].attempts if dead else 0,
        "seconds": round(elapsed, 3),
    }


def _check(outcome: Counter[str], dead: list[DLQEntry], events: int, done: asyncio.Event) -> None:
    if outcome["handled"] + len(dead) >= events:
        done.set()


def print_summary(summary: dict[str, int | float]) -> None:
    """The demo's table, as plain text (the same with or without a terminal)."""
    width = max(len(k) for k in summary)
    print("dotmac-events demo: orders on the memory bus (every 10th fails once, every 50th always)")
    print(f"{'metric'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for name, value in summary.items():
        print(f"{name.ljust(width)}  {value}")
