"""What Prometheus and OpenTelemetry hooks cost on the hot path (publish + consume).

Workload: N events (default 20,000 on memory, 5,000 on Redis) with a ~100-byte JSON payload,
published one by one and consumed by one subscription (concurrency 1) whose handler does nothing,
so the hooks' share of the work is as large as it gets; a real handler makes it smaller. Every
configuration runs in the same process, interleaved, ``--repeat`` times; the best time counts.

Configurations: no observer; Prometheus only (a private CollectorRegistry); OpenTelemetry with
the API only (no SDK installed as provider: what a library user pays before configuring
tracing); OpenTelemetry with the SDK recording every span into a BatchSpanProcessor whose
exporter drops them (the real cost of tracing, minus network); and Prometheus + OTel SDK. The
table gives events per second and the ratio of each time to the no-observer time.

Redis runs too when ``--redis-url`` is given, or when ``redis-server`` is on PATH (started by the
test harness on a free port without persistence, stopped at the end).

    python benchmarks/hooks_overhead.py [-n 20000] [--repeat 3] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry

from dotmac.events import (
    CompositeObserver,
    Event,
    EventBus,
    MemoryConfig,
    Observer,
    create_memory_bus,
    create_redis_bus,
)
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.observability.otel import TracingObserver
from dotmac.events.observability.prometheus import PrometheusObserver
from tests.support.redis_server import RedisServer, find_redis_binary

PAYLOAD = {"user_id": 123, "name": "John Doe", "email": "john@example.com", "plan": "pro"}
RUN_TIMEOUT = 120.0


class DropExporter(SpanExporter):
    """Accepts every span and sends it nowhere."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def sdk_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=65_536))
    return provider


def configurations() -> list[tuple[str, Callable[[], Observer | None]]]:
    return [
        ("no observer", lambda: None),
        ("prometheus", lambda: PrometheusObserver(CollectorRegistry())),
        ("otel api only", lambda: TracingObserver(NoOpTracerProvider())),
        ("otel sdk", lambda: TracingObserver(sdk_provider())),
        (
            "prometheus + otel sdk",
            lambda: CompositeObserver(
                [TracingObserver(sdk_provider()), PrometheusObserver(CollectorRegistry())]
            ),
        ),
    ]


async def run(bus: EventBus, n: int) -> float:
    """Publish ``n`` events and wait until the handler saw all of them; seconds taken."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    done = asyncio.Event()
    handled = 0

    async def handler(event: Event) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    async with asyncio.timeout(RUN_TIMEOUT):
        await bus.subscribe(topic, handler, group="bench")
        started = time.perf_counter()
        for _ in range(n):
            await bus.publish(Event(topic, PAYLOAD))
        await done.wait()
        elapsed = time.perf_counter() - started
    await bus.close()
    return elapsed


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    """``url`` as given, else a redis-server started by the test harness (None if none exists)."""
    if url is not None:
        yield url
        return
    binary = find_redis_binary()
    if binary is None:
        yield None
        return
    with RedisServer(binary) as server:
        yield server.url


async def measure(
    name: str, make_bus: Callable[[Observer | None], EventBus], n: int, repeat: int
) -> list[tuple[str, str, int, float]]:
    best: dict[str, float] = {}
    for _ in range(repeat):
        for label, make_observer in configurations():
            elapsed = await run(make_bus(make_observer()), n)
            best[label] = min(best.get(label, float("inf")), elapsed)
    return [(name, label, n, seconds) for label, seconds in best.items()]


def table(rows: list[tuple[str, str, int, float]]) -> str:
    lines = [
        f"{'bus':<8} {'hooks':<24} {'events':>7} {'seconds':>8} {'events/s':>10} {'on/off':>7}",
        "-" * 69,
    ]
    baseline = {bus: s for bus, label, _, s in rows if label == "no observer"}
    for bus, label, n, seconds in rows:
        lines.append(
            f"{bus:<8} {label:<24} {n:>7} {seconds:>8.3f} {n / seconds:>10,.0f} "
            f"{seconds / baseline[bus]:>7.2f}"
        )
    return "\n".join(lines)


async def main(n: int, redis_n: int, repeat: int, redis_url: str | None) -> None:
    rows = await measure(
        "memory",
        lambda observer: create_memory_bus(MemoryConfig(max_queue_size=n + 1), observer=observer),
        n,
        repeat,
    )
    with redis_server(redis_url) as url:
        if url is None:
            print("(redis skipped: no --redis-url and no redis-server on PATH)")
        else:
            config = RedisConfig(url=url, block_ms=100)
            rows += await measure(
                "redis",
                lambda observer: create_redis_bus(config, observer=observer),
                redis_n,
                repeat,
            )
    print(__doc__.split("\n\n")[1])
    print()
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="events per memory run (max 200k)")
    parser.add_argument("--redis-n", type=int, default=5_000, help="events per Redis run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (max 10)")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    asyncio.run(
        main(min(args.n, 200_000), min(args.redis_n, 50_000), min(args.repeat, 10), args.redis_url)
    )
