"""CPU the engine spends per message, apart from any broker: a deterministic count.

The engine consumes N pre-encoded events from a receiver that costs nothing (every fetch hands
over a ready batch), against the raw loop a user would write (``orjson.loads`` + the handler).
Wall-clock rates on a shared 2-core machine swing by tens of percent; instruction counts do not.
Count instructions per message as the difference of two runs, so start-up cancels out::

    for n in 2000 12000; do
      PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m benchmarks.engine_cost ours $n 2>&1 | grep Collected
    done   # (second - first) / 10000 = instructions per message

Modes: ``ours`` (no observer), ``prometheus``, ``otel`` (API only, no SDK), ``hooks``
(create_dotmac_observability_hooks) and ``raw``. Without valgrind it prints CPU seconds per
message, which are noisier.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from dotmac.events import BacklogStats, ConsumerOptions, Event, HealthStatus, JsonCodec
from dotmac.events.engine import TransportBus
from dotmac.events.observability.observer import Observer
from dotmac.events.transport import Delivery, Receiver

PAYLOAD = {
    "id": 12345,
    "customer": "cust-42",
    "items": [{"sku": "A-1", "qty": 2}],
    "note": "x" * 80,
}
DATA = JsonCodec().encode(Event("t", PAYLOAD, key="k"))


class FreeReceiver:
    """Hands over ready-made deliveries; acks cost nothing."""

    def __init__(self, total: int) -> None:
        self.total, self.sent, self.stop = total, 0, asyncio.Event()

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        if self.sent >= self.total:
            await self.stop.wait()
            return []
        n = min(max_count, self.total - self.sent)
        batch = [Delivery(DATA, 1, f"{self.sent + i}-0", f"k{i % 16}") for i in range(n)]
        self.sent += n
        await asyncio.sleep(0)
        return batch

    async def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        return None

    async def release(self, deliveries: Sequence[Delivery]) -> None: ...

    def interrupt(self) -> None:
        self.stop.set()

    async def close(self) -> None: ...


class FreeBus(TransportBus):
    adapter = "free"

    def __init__(self, total: int, observer: Observer | None) -> None:
        super().__init__(observer=observer)
        self.total = total

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None: ...

    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int
    ) -> Receiver:
        return FreeReceiver(self.total)

    def _prefetch(self, concurrency: int) -> int:
        return 200

    async def health(self) -> HealthStatus:
        return HealthStatus(healthy=True, adapter=self.adapter, latency_ms=0.0)

    async def stats(self, topic: str, group: str | None = None) -> BacklogStats:
        return BacklogStats(topic=topic, group=group)


def observer_for(mode: str) -> Observer | None:
    if mode == "prometheus":
        from prometheus_client import CollectorRegistry

        from dotmac.events.observability.prometheus import PrometheusObserver

        return PrometheusObserver(registry=CollectorRegistry())
    if mode == "otel":
        from dotmac.events.observability.otel import TracingObserver

        return TracingObserver()
    if mode == "hooks":
        from prometheus_client import CollectorRegistry

        from dotmac.events import create_dotmac_observability_hooks

        return create_dotmac_observability_hooks(CollectorRegistry(), tracing=False)
    return None


async def engine(total: int, observer: Observer | None) -> None:
    bus, done, seen = FreeBus(total, observer), asyncio.Event(), 0

    async def handler(event: Event) -> None:
        nonlocal seen
        seen += 1
        if seen == total:
            done.set()

    await bus.subscribe("t", handler, group="g", policy=ConsumerOptions())
    await done.wait()
    await bus.close()


async def raw(total: int) -> None:
    async def handler(payload: Any) -> None: ...

    for start in range(0, total, 100):
        batch = [Delivery(DATA, 1, f"{start + i}-0", "k") for i in range(100)]
        for delivery in batch:
            await handler(orjson.loads(delivery.data))
        await asyncio.sleep(0)


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else "ours"
    total = int(argv[1]) if len(argv) > 1 else 100_000
    started = time.process_time()
    asyncio.run(raw(total) if mode == "raw" else engine(total, observer_for(mode)))
    print(f"{mode}: {(time.process_time() - started) / total * 1e6:.2f} us CPU per message")


if __name__ == "__main__":
    main(sys.argv[1:])
