"""What every benchmark module shares: the workload, the row shape, the counting handler.

A benchmark module returns :class:`Comparison`\\ s. Each one has an ``ours`` side (the library)
and a ``baseline`` side (the raw client doing the least the same job needs); each side is one
repetition and returns ``{row id: value}``. The runner interleaves the two sides and turns
their values into rows of the table.
"""

from __future__ import annotations

import asyncio
import operator
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from dotmac.events import Event

__all__ = [
    "Comparison",
    "Detail",
    "Row",
    "Sample",
    "Settings",
    "Tally",
    "events",
    "fresh",
    "key",
    "paced",
    "payload",
    "percentiles_ms",
    "raw_envelope",
]

Sample = dict[str, float]
"""One repetition of one side: row id -> value in the row's unit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Event counts and limits of one run; ``FULL`` and ``SMOKE`` in the runner."""

    redis_url: str = ""
    kafka_bootstrap: str = ""
    cluster_url: str = ""  # redis+cluster://h1:p1,h2:p2,h3:p3
    nats_url: str = ""
    memory_events: int
    consume_events: int  # Redis consume rows and the hooks rows
    batch_events: int  # publish_many rows
    faststream_events: int  # FastStream consume (it is slow, see its module)
    publish_events: int  # awaited one-at-a-time and 32-task publish rows
    kafka_events: int
    cluster_events: int  # Redis Cluster consume, publish_many and spread rows
    nats_events: int  # NATS consume and publish_many rows
    latency_events: int
    latency_rate: float = 1000.0
    held_events: int
    repeat: int
    timeout: float  # seconds, per repetition of one side


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One line of the table: what ours does, against what, and the ratio it must reach."""

    id: str
    path: str
    baseline: str
    unit: str
    target: tuple[str, float] | None  # (">=", 0.7), ("<=", 1.2), or None: informational
    ratio: Callable[[float, float], float] = operator.truediv  # (ours, baseline) -> ratio
    better: Literal["higher", "lower"] = "higher"  # for rows without a target

    @property
    def higher_is_better(self) -> bool:
        if self.target is None:
            return self.better == "higher"
        return self.target[0] == ">="

    def meets(self, ratio: float) -> bool | None:
        if self.target is None:
            return None
        op, value = self.target
        return ratio >= value if op == ">=" else ratio <= value


@dataclass(frozen=True, slots=True, kw_only=True)
class Detail:
    """Figures behind a row that one number cannot carry (how events spread over partitions):
    ``data`` goes to latest.json, ``lines`` (Markdown) under the table in latest.md."""

    title: str
    data: dict[str, Any]
    lines: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Two sides measured alternately; both return a value for every row id in ``rows``.

    ``details``, when given, is called once after the last repetition.
    """

    rows: tuple[Row, ...]
    ours: Callable[[], Awaitable[Sample]]
    baseline: Callable[[], Awaitable[Sample]]
    details: Callable[[], Detail] | None = None


def payload(i: int) -> dict[str, Any]:
    """A ~250-byte JSON order, different per event so nothing is cached by accident."""
    return {
        "order_id": f"ord-{i:08d}",
        "customer_id": f"cus-{i % 9973:06d}",
        "email": f"customer{i % 9973}@example.com",
        "amount": 1234.5 + i % 100,
        "currency": "EUR",
        "items": [
            {"sku": "sku-000017", "qty": 2, "price": 19.99},
            {"sku": "sku-000042", "qty": 1, "price": 5.5},
        ],
        "created_at": "2026-01-01T12:00:00Z",
    }


def key(i: int) -> str:
    """16 keys, so concurrency > 1 spreads events over lanes and partitions."""
    return f"k{i % 16}"


def events(topic: str, start: int, stop: int) -> list[Event]:
    """Events ``start`` to ``stop - 1`` of the workload, ready for ``publish_many``."""
    return [Event(topic, payload(i), key=key(i)) for i in range(start, stop)]


def raw_envelope(topic: str, i: int, **extra: Any) -> dict[str, Any]:
    """What a raw client sends: topic, key and payload, no id, timestamp or headers."""
    return {"topic": topic, "key": key(i), "payload": {**payload(i), **extra}}


def fresh(name: str) -> str:
    """A topic or stream name nobody used before, so runs never see each other's data."""
    return f"bench.{name}.{uuid.uuid4().hex[:10]}"


class Tally:
    """A handler that counts calls and notes when the first and the ``n``-th happened.

    Consume rows time first to last handled, so group joins and pre-filling are not counted.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    async def __call__(self, _item: object) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        if self.count == self.n:
            self.last = now
            self.done.set()

    def rate(self) -> float:
        """Events per second between the first and the last handled."""
        return (self.n - 1) / (self.last - self.first)


async def paced(n: int, rate: float, send: Callable[[int], Awaitable[object]]) -> None:
    """Call ``send(i)`` ``n`` times at ``rate`` per second, catching up if it fell behind."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


def percentiles_ms(samples: list[float], warmup: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``samples`` (seconds), the first ``warmup`` dropped."""
    kept = samples[warmup:]
    cuts = statistics.quantiles(kept, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000
