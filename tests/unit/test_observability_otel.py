"""OpenTelemetry spans on the memory bus: producer -> consumer parentage, attributes, failures.

Spans go to a TracerProvider passed in explicitly (the global one can be set once per process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dotmac.events import (
    ConfigurationError,
    Event,
    JsonCodec,
    create_exponential_retry_options,
    create_memory_bus,
    run_consumer,
)
from dotmac.events.observability.otel import TracingObserver
from tests.support.observability import Scenario, run_scenario


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> TracingObserver:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return TracingObserver(tracer_provider=provider)


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind, topic: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.kind is kind and (s.attributes or {}).get("messaging.destination.name") == topic
    ]


async def test_consumer_span_is_child_of_producer_span(
    tracing: TracingObserver, exporter: InMemorySpanExporter
) -> None:
    received: list[Event] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        received.append(event)
        done.set()

    async with create_memory_bus(observer=tracing) as bus:
        await bus.subscribe("orders", handler, group="billing")
        sent = Event("orders", {"n": 1}, key="customer-7")
        await bus.publish(sent)
        async with asyncio.timeout(5):
            await done.wait()
    spans = exporter.get_finished_spans()
    [producer] = by_kind(spans, SpanKind.PRODUCER, "orders")
    [consumer] = by_kind(spans, SpanKind.CONSUMER, "orders")
    assert producer.name == "send orders"
    assert consumer.name == "process orders"
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert producer.attributes == {
        "messaging.system": "memory",
        "messaging.destination.name": "orders",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": str(sent.id),
    }
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.consumer.group.name"] == "billing"
    assert attributes["messaging.message.id"] == str(sent.id)
    assert attributes["dotmac.delivery.count"] == 1
    assert consumer.status.status_code is StatusCode.UNSET
    # The context travelled in the event's headers, W3C format.
    traceparent = received[0].headers["traceparent"]
    assert traceparent.split("-")[1] == format(producer.context.trace_id, "032x")
    assert "traceparent" not in sent.headers  # the caller's event is never changed


async def test_retries_and_dead_letters_are_span_events_and_failures_set_status(
    tracing: TracingObserver, exporter: InMemorySpanExporter
) -> None:
    scenario = Scenario(ok=1, flaky=1, bad=1, max_retries=2)
    async with create_memory_bus(observer=tracing) as bus:
        await run_scenario(bus, scenario)
    spans = exporter.get_finished_spans()
    producers = {s.context.span_id: s for s in by_kind(spans, SpanKind.PRODUCER, scenario.topic)}
    consumers = by_kind(spans, SpanKind.CONSUMER, scenario.topic)
    assert len(producers) == scenario.published
    assert len(consumers) == scenario.successes + scenario.failures
    for span in consumers:
        assert span.parent is not None and span.parent.span_id in producers
    failed = [s for s in consumers if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == scenario.failures
    retries = [e for s in failed for e in s.events if e.name == "retry"]
    dead = [e for s in failed for e in s.events if e.name == "dead_letter"]
    assert len(retries) == scenario.retries
    assert len(dead) == scenario.bad
    assert sorted(e.attributes["messaging.retry.attempt"] for e in retries) == [1, 1, 2]  # type: ignore[index]
    assert dead[0].attributes == {
        "messaging.dlq.destination.name": scenario.dlq_topic,
        "messaging.dlq.attempts": scenario.max_retries + 1,
    }
    for span in failed:
        assert span.attributes["error.type"] == "RuntimeError"  # type: ignore[index]
        assert any(e.name == "exception" for e in span.events)
    assert not tracing._failed  # every failed span was ended


async def test_handler_publish_and_app_span_join_the_trace(
    tracing: TracingObserver, exporter: InMemorySpanExporter
) -> None:
    done = asyncio.Event()

    async def first(event: Event) -> None:
        await bus.publish(Event("second", {}))

    async def second(event: Event) -> None:
        done.set()

    tracer = tracing.tracer
    async with create_memory_bus(observer=tracing) as bus:
        await bus.subscribe("first", first, group="g")
        await bus.subscribe("second", second, group="g")
        with tracer.start_as_current_span("http request") as root:
            await bus.publish(Event("first", {}))
        async with asyncio.timeout(5):
            await done.wait()
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {root.get_span_context().trace_id}
    [send_first] = by_kind(spans, SpanKind.PRODUCER, "first")
    [process_first] = by_kind(spans, SpanKind.CONSUMER, "first")
    [send_second] = by_kind(spans, SpanKind.PRODUCER, "second")
    [process_second] = by_kind(spans, SpanKind.CONSUMER, "second")
    assert send_first.parent.span_id == root.get_span_context().span_id  # type: ignore[union-attr]
    assert send_second.parent.span_id == process_first.context.span_id  # type: ignore[union-attr]
    assert process_second.parent.span_id == send_second.context.span_id  # type: ignore[union-attr]


async def test_undecodable_message_gets_its_own_failed_span(
    tracing: TracingObserver, exporter: InMemorySpanExporter
) -> None:
    def reject_all(topic: str, payload: object) -> None:
        if topic == "raw":
            raise ValueError("schema says no")

    producer = create_memory_bus()
    consumer = producer.client(codec=JsonCodec.with_schema_validation(reject_all), observer=tracing)
    dead = asyncio.Event()

    async def on_dead(event: Event) -> None:
        dead.set()

    async def never(event: Event) -> None:
        raise AssertionError("an undecodable message reached the handler")

    await run_consumer(consumer, "raw", never, create_exponential_retry_options(), group="g")
    await producer.subscribe("raw.DLQ", on_dead, group="dlq")
    await producer.publish(Event("raw", {}))
    async with asyncio.timeout(5):
        await dead.wait()
    await consumer.close()
    await producer.close()
    [span] = by_kind(exporter.get_finished_spans(), SpanKind.CONSUMER, "raw")
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception", "dead_letter"]


async def test_failed_publish_sets_error_status(
    tracing: TracingObserver, exporter: InMemorySpanExporter
) -> None:
    async with create_memory_bus(observer=tracing) as bus:
        with pytest.raises(ValueError):
            await bus.publish(Event("t", {"x": object()}))
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.PRODUCER
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "dotmac.events.errors.EncodeError"  # type: ignore[index]


def test_rejects_a_non_provider() -> None:
    with pytest.raises(ConfigurationError, match="tracer_provider"):
        TracingObserver(tracer_provider="jaeger")  # type: ignore[arg-type]


async def test_span_of_a_failed_dead_letter_publish_ends_when_the_retry_succeeds(
    tracing: TracingObserver, exporter: InMemorySpanExporter
) -> None:
    refusals = 0

    def refuse_first_dlq(topic: str, payload: object) -> None:
        nonlocal refusals
        if topic.endswith(".DLQ") and refusals == 0:
            refusals += 1
            raise ValueError("DLQ unavailable")

    codec = JsonCodec.with_schema_validation(refuse_first_dlq)
    dead = asyncio.Event()

    async def always_reject(event: Event) -> None:
        from dotmac.events import Reject

        raise Reject("no")

    async def on_dead(event: Event) -> None:
        dead.set()

    async with create_memory_bus(codec=codec, observer=tracing) as bus:
        options = create_exponential_retry_options(base_delay_ms=1, max_delay_ms=2)
        await run_consumer(bus, "jobs", always_reject, options, group="g")
        await bus.subscribe("jobs.DLQ", on_dead, group="dlq")
        await bus.publish(Event("jobs", {}))
        async with asyncio.timeout(5):
            await dead.wait()
    consumers = by_kind(exporter.get_finished_spans(), SpanKind.CONSUMER, "jobs")
    # One handler call: the failed dead-letter publish is retried without calling the handler
    # again, and the call's span ends once the dead letter is out.
    assert len(consumers) == 1
    assert [e.name for e in consumers[0].events] == ["exception", "dead_letter"]
    assert not tracing._failed
