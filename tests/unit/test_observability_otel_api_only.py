"""TracingObserver with opentelemetry-api alone (no SDK provider): no spans are made, but trace
context and baggage still pass through every hop, and an SDK set later takes over.

No test here sets the process-wide provider; the one that needs a global SDK patches the API's
slot for its duration.
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from dotmac.events import Event, Reject, create_memory_bus
from dotmac.events.observability.otel import TracingObserver
from tests.support.observability import Scenario, run_scenario

UPSTREAM = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def api_only() -> TracingObserver:
    observer = TracingObserver()
    assert observer._inert(), "a global SDK provider is set in this process"
    return observer


def test_calls_with_nothing_to_carry_do_nothing() -> None:
    observer = api_only()
    event = Event("t", {})
    with observer.publishing(event, adapter="memory") as headers:
        assert headers == {}
    outer = otel_context.get_current()
    consuming = observer.consuming(event, group="g", adapter="memory")
    assert consuming is observer.consuming(Event("u", {}), group="g", adapter="memory")
    with pytest.raises(ValueError), consuming:
        assert otel_context.get_current() is outer  # the handler runs where it was
        raise ValueError("boom")
    observer.retried(event, group="g", adapter="memory", attempt=1, delay=0.0, error=ValueError())
    assert not observer._failed


async def test_a_scenario_with_failures_keeps_nothing_open() -> None:
    observer = api_only()
    async with create_memory_bus(observer=observer) as bus:
        outcome = await run_scenario(bus, Scenario(ok=2, flaky=1, bad=1))
    assert len(outcome.dead) == 1
    assert not observer._failed


async def test_upstream_context_and_baggage_pass_through_every_hop() -> None:
    observer = api_only()
    seen: list[tuple[SpanContext, object]] = []
    relayed: list[Event] = []
    done = asyncio.Event()

    async def relay(event: Event) -> None:
        seen.append((trace.get_current_span().get_span_context(), baggage.get_baggage("tenant")))
        await bus.publish(Event("downstream", {}))

    async def sink(event: Event) -> None:
        relayed.append(event)
        done.set()

    async with create_memory_bus(observer=observer) as bus:
        await bus.subscribe("upstream", relay, group="g")
        await bus.subscribe("downstream", sink, group="g")
        # What an instrumented web framework leaves current: a remote span and some baggage.
        ctx = baggage.set_baggage(
            "tenant", "acme", trace.set_span_in_context(NonRecordingSpan(UPSTREAM))
        )
        token = otel_context.attach(ctx)
        try:
            await bus.publish(Event("upstream", {}))
        finally:
            otel_context.detach(token)
        async with asyncio.timeout(5):
            await done.wait()
    [(span_context, tenant)] = seen
    assert span_context.trace_id == UPSTREAM.trace_id
    assert span_context.span_id == UPSTREAM.span_id
    assert tenant == "acme"
    [downstream] = relayed
    assert downstream.headers["traceparent"] == TRACEPARENT
    assert downstream.headers["baggage"] == "tenant=acme"


async def test_trace_headers_from_another_service_reach_the_handler() -> None:
    observer = api_only()
    seen: list[SpanContext] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        seen.append(trace.get_current_span().get_span_context())
        done.set()

    async with create_memory_bus() as producer:  # a service publishing without any observer
        consumer = producer.client(observer=observer)
        await consumer.subscribe("t", handler, group="g")
        await producer.publish(Event("t", {}, headers={"traceparent": TRACEPARENT}))
        async with asyncio.timeout(5):
            await done.wait()
        await consumer.close()
    assert seen[0].trace_id == UPSTREAM.trace_id and seen[0].is_remote


async def test_undecodable_dead_letter_without_an_sdk_makes_no_span() -> None:
    observer = api_only()
    observer.dead_lettered(
        "t",
        group="g",
        adapter="memory",
        dlq_topic="t.DLQ",
        attempts=1,
        error=Reject("no"),
        event=None,
    )
    assert not observer._failed


async def test_an_sdk_set_globally_later_makes_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    observer = api_only()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    assert not observer._inert()
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        done.set()

    async with create_memory_bus(observer=observer) as bus:
        await bus.subscribe("t", handler, group="g")
        await bus.publish(Event("t", {}))
        async with asyncio.timeout(5):
            await done.wait()
    kinds = sorted(s.kind.name for s in exporter.get_finished_spans())
    assert kinds == [SpanKind.CONSUMER.name, SpanKind.PRODUCER.name]
    exporter.shutdown()
