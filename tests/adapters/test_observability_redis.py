"""Observability on a real redis-server: exact metrics, a trace across Redis, backlog numbers
that match redis-cli, and health that follows the server going away and coming back."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from dotmac.events import Event, HealthChecker, RedisConfig, create_redis_bus
from dotmac.events.observability.otel import TracingObserver
from dotmac.events.observability.prometheus import BacklogMonitor, PrometheusObserver
from tests.support.observability import HeldHandlers, Scenario, eventually, run_scenario
from tests.support.redis_server import local_redis_server, redis_cli

pytestmark = pytest.mark.redis


def config(url: str, prefix: str) -> RedisConfig:
    return RedisConfig(
        url=url, key_prefix=prefix, block_ms=100, claim_idle_ms=500, claim_interval=0.1
    )


async def test_every_counter_and_histogram_count_is_exact(
    redis_url: str, redis_prefix: str
) -> None:
    registry = CollectorRegistry()
    scenario = Scenario()
    bus = create_redis_bus(config(redis_url, redis_prefix), observer=PrometheusObserver(registry))
    async with bus:
        outcome = await run_scenario(bus, scenario)
    assert [e.attempts for e in outcome.dead] == [scenario.max_retries + 1] * scenario.bad
    for (name, labels), value in scenario.expected("redis").items():
        got = registry.get_sample_value(name, dict(labels)) or 0.0
        assert got == value, (name, dict(labels), got, value)
    errors = [s for f in registry.collect() for s in f.samples if s.name == "events_errors_total"]
    assert errors == []


async def test_consumer_span_continues_the_producer_trace_across_redis(
    redis_url: str, redis_prefix: str
) -> None:
    exporter = InMemorySpanExporter()
    spans_from: dict[str, TracerProvider] = {}
    for side in ("producer", "consumer"):  # two services, each with its own SDK pipeline
        provider = spans_from[side] = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = create_redis_bus(
        config(redis_url, redis_prefix), observer=TracingObserver(spans_from["producer"])
    )
    consumer = create_redis_bus(
        config(redis_url, redis_prefix), observer=TracingObserver(spans_from["consumer"])
    )
    handled = asyncio.Event()

    async def handler(event: Event) -> None:
        handled.set()

    async with producer, consumer:
        await consumer.subscribe("traced", handler, group="svc")
        sent = Event("traced", {"n": 1}, key="k")
        await producer.publish(sent)
        async with asyncio.timeout(10):
            await handled.wait()
    spans = exporter.get_finished_spans()
    [send] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [process] = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "redis"
    assert process.attributes["messaging.destination.name"] == "traced"
    assert process.attributes["messaging.consumer.group.name"] == "svc"
    assert process.attributes["messaging.message.id"] == str(sent.id)


def xinfo_lag(url: str, stream: str, group: str) -> int:
    """The ``lag`` field of ``group`` in ``XINFO GROUPS`` (field/value lines, group after group)."""
    tokens = redis_cli(url, "XINFO", "GROUPS", stream).splitlines()
    current = None
    for field, value in zip(tokens[::2], tokens[1::2], strict=True):
        if field == "name":
            current = value
        elif field == "lag" and current == group:
            return int(value)
    raise AssertionError(f"no lag for group {group!r} in XINFO GROUPS")


async def test_backlog_gauges_match_redis_cli(redis_url: str, redis_prefix: str) -> None:
    registry = CollectorRegistry()
    monitor = BacklogMonitor(registry)
    handlers = HeldHandlers(hold_count=4)

    topic = "backlog"
    stream = f"{redis_prefix}{topic}"
    async with create_redis_bus(config(redis_url, redis_prefix)) as bus:
        idle = await bus.subscribe(topic, handlers.reject, group="behind")
        await idle.close()  # the group exists and falls behind everything published next
        busy = await bus.subscribe(topic, handlers.hold, group="busy", concurrency=4)
        for i in range(10):
            await bus.publish(Event(topic, {"i": i}))
        async with asyncio.timeout(10):
            await handlers.holding.wait()
        monitor.watch(bus, topic, "busy")
        monitor.watch(bus, topic, "behind")
        await monitor.refresh()

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"topic": topic, "adapter": "redis", **labels})

        assert value("events_topic_length") == int(redis_cli(redis_url, "XLEN", stream)) == 10
        # XPENDING's summary starts with the number of pending entries.
        pending = int(redis_cli(redis_url, "XPENDING", stream, "busy").split()[0])
        assert pending >= 4  # four running, the rest prefetched and not acked
        assert value("events_pending", group="busy") == pending
        assert value("events_consumer_lag", group="behind") == xinfo_lag(
            redis_url, stream, "behind"
        )
        assert value("events_consumer_lag", group="behind") == 10
        age = value("events_oldest_pending_age_seconds", group="busy")
        assert age is not None and age >= 0
        assert value("events_dlq_depth") == 0

        handlers.gate.set()
        idle = await bus.subscribe(topic, handlers.reject, group="behind")

        async def drained() -> bool:
            stats = await bus.stats(topic, "behind")
            return stats.dlq_depth == 10 and stats.pending == 0

        await eventually(drained)
        await busy.close()
        await idle.close()
        await monitor.refresh()
        dlq_len = int(redis_cli(redis_url, "XLEN", f"{stream}.DLQ"))
        assert value("events_dlq_depth") == dlq_len == 10
        assert value("events_pending", group="busy") == 0
        assert int(redis_cli(redis_url, "XPENDING", stream, "busy").split()[0]) == 0
        assert value("events_oldest_pending_age_seconds", group="busy") is None


async def test_health_follows_the_server_down_and_back(redis_prefix: str) -> None:
    with local_redis_server() as server:
        cfg = RedisConfig(
            url=server.url,
            key_prefix=redis_prefix,
            connection_timeout=0.5,
            consumer_timeout=1.0,
            block_ms=100,
        )
        registry = CollectorRegistry()
        async with create_redis_bus(cfg) as bus:
            monitor = BacklogMonitor(registry, timeout=1.0)
            monitor.watch(bus, "hb")
            async with HealthChecker(bus, check_interval=0.1, timeout=1.0) as checker:
                assert checker.healthy
                assert checker.status is not None and checker.status.adapter == "redis"
                await monitor.refresh()
                assert (
                    registry.get_sample_value(
                        "events_topic_length", {"topic": "hb", "adapter": "redis"}
                    )
                    == 0
                )
                server.stop()
                await eventually(lambda: not checker.healthy, timeout=15)
                assert checker.status is not None and "error" in checker.status.details
                await monitor.refresh()  # the broker cannot be asked: no stale numbers
                assert (
                    registry.get_sample_value(
                        "events_topic_length", {"topic": "hb", "adapter": "redis"}
                    )
                    is None
                )
                server.start()
                await eventually(lambda: checker.healthy, timeout=15)
                await monitor.refresh()
                assert (
                    registry.get_sample_value(
                        "events_topic_length", {"topic": "hb", "adapter": "redis"}
                    )
                    == 0
                )
