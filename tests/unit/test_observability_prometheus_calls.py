"""How PrometheusObserver records publishes and handler calls: its own series, turned into
families at scrape time, must read exactly as prometheus_client's Counter and Histogram would.

The clock is replaced, so every duration is chosen by the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as client_values
from prometheus_client.metrics import disable_created_metrics, enable_created_metrics

from dotmac.events import Event, create_memory_bus
from dotmac.events.observability import prometheus as prometheus_module
from dotmac.events.observability.prometheus import DEFAULT_BUCKETS, PrometheusObserver
from tests.support.observability import Scenario, run_scenario


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(prometheus_module, "perf_counter", fake)
    return fake


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


# Boundaries fall into their own bucket (le), just above goes to the next, past the last to +Inf.
DURATIONS = (0.0, 0.0005, 0.00051, 0.001, 0.2, 1.0, 29.9, 30.0, 30.5, 1e9)


def handle(
    observer: PrometheusObserver, clock: FakeClock, seconds: float, error: BaseException | None
) -> None:
    event = Event("orders", {})
    clock.now = 0.0  # so the observer measures exactly ``seconds``
    try:
        with observer.consuming(event, group="billing", adapter="memory"):
            clock.now += seconds
            if error is not None:
                raise error
    except BaseException as exc:
        assert exc is error


def test_handler_calls_read_as_prometheus_client_would(clock: FakeClock) -> None:
    ours = CollectorRegistry()
    observer = PrometheusObserver(ours)
    reference = CollectorRegistry()
    calls = Counter(
        "events_consumed_total",
        "Handler calls, by outcome (each retry is a call).",
        ("topic", "adapter", "group", "outcome"),
        registry=reference,
    )
    duration = Histogram(
        "event_consume_duration_seconds",
        "Handler call duration.",
        ("topic", "adapter", "group"),
        buckets=DEFAULT_BUCKETS,
        registry=reference,
    )
    errors: tuple[tuple[BaseException | None, str], ...] = (
        (None, "success"),
        (ValueError("boom"), "error"),
        (asyncio.CancelledError(), "cancelled"),
    )
    for i, seconds in enumerate(DURATIONS):
        error, outcome = errors[i % len(errors)]
        handle(observer, clock, seconds, error)
        calls.labels("orders", "memory", "billing", outcome).inc()
        duration.labels("orders", "memory", "billing").observe(seconds)
    Counter(  # the families ours has and the reference lacks, empty on both sides
        "events_published_total",
        "Events published, by outcome.",
        ("topic", "adapter", "outcome"),
        registry=reference,
    )
    got = samples(ours)
    want = samples(reference)
    assert {k: v for k, v in got.items() if "consume" in k[0]} == want
    # Help text and type lines match too (sample order aside).
    ours_text = generate_latest(ours).decode().splitlines()
    reference_text = generate_latest(reference).decode().splitlines()
    for line in reference_text:
        if line.startswith("#"):
            assert line in ours_text


def test_overlapping_calls_on_one_series_keep_their_own_start(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    event = Event("t", {})
    first = observer.consuming(event, group="g", adapter="memory")
    first.__enter__()
    clock.now += 10.0
    second = observer.consuming(event, group="g", adapter="memory")
    second.__enter__()
    clock.now += 0.0001
    second.__exit__(None, None, None)  # 0.0001 s
    third = observer.consuming(event, group="g", adapter="memory")  # reuses a finished call
    third.__enter__()
    clock.now += 0.002
    third.__exit__(None, None, None)  # 0.002 s
    first.__exit__(None, None, None)  # 10.0021 s
    labels = {"topic": "t", "adapter": "memory", "group": "g"}

    def bucket(le: str) -> float | None:
        return registry.get_sample_value(
            "event_consume_duration_seconds_bucket", {**labels, "le": le}
        )

    assert bucket("0.0005") == 1.0
    assert bucket("0.0025") == 2.0
    assert bucket("10.0") == 2.0
    assert bucket("30.0") == 3.0
    total = registry.get_sample_value("event_consume_duration_seconds_sum", labels)
    assert total == pytest.approx(10.0021 + 0.002 + 0.0001)


def test_publishes_count_by_outcome_and_tenant(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry, tenant_label=True)
    for tenant, fail in (("acme", False), ("acme", True), (None, False)):
        try:
            with observer.publishing(Event("_inbox.abc", {}, tenant_id=tenant), adapter="redis"):
                clock.now += 0.003
                if fail:
                    raise ConnectionError("down")
        except ConnectionError:
            pass
    base = {"topic": "_inbox", "adapter": "redis"}

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**base, **labels})

    assert value("events_published_total", outcome="success", tenant_id="acme") == 1.0
    assert value("events_published_total", outcome="error", tenant_id="acme") == 1.0
    assert value("events_published_total", outcome="success", tenant_id="") == 1.0
    assert value("events_published_total", outcome="error", tenant_id="") is None
    assert value("event_publish_duration_seconds_count", tenant_id="acme") == 2.0
    assert value("event_publish_duration_seconds_bucket", tenant_id="", le="0.0025") == 0.0
    assert value("event_publish_duration_seconds_bucket", tenant_id="", le="0.005") == 1.0


def test_created_series_follow_prometheus_client_setting(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    handle(observer, clock, 0.1, None)

    def created() -> set[str]:
        return {
            s.name for f in registry.collect() for s in f.samples if s.name.endswith("_created")
        }

    assert created() == {"events_consumed_created", "event_consume_duration_seconds_created"}
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        assert created() == set()
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


def test_the_raw_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    monkeypatch.setattr(prometheus_module, "_CACHE_LIMIT", 4)
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    for i in range(10):  # ten private groups: random names, one "private" series
        group = f"private-{i:032x}"
        with observer.consuming(Event("t", {}), group=group, adapter="memory"):
            pass
    assert len(observer._m.caches["consume"]) <= 4
    labels = {"topic": "t", "adapter": "memory", "group": "private", "outcome": "success"}
    assert registry.get_sample_value("events_consumed_total", labels) == 10.0


def test_scrapes_from_another_thread_while_recording(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    stop = threading.Event()
    scraped: list[bytes] = []

    def scrape() -> None:
        while not stop.is_set():
            scraped.append(generate_latest(registry))

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(2000):
            handle(observer, clock, 0.001, None)
            with observer.consuming(Event(f"t{i % 50}", {}), group="g", adapter="memory"):
                pass
    finally:
        stop.set()
        thread.join(5)
    assert scraped
    labels = {"topic": "orders", "adapter": "memory", "group": "billing", "outcome": "success"}
    assert registry.get_sample_value("events_consumed_total", labels) == 2000.0


@pytest.fixture
def multiprocess_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """prometheus_client as under PROMETHEUS_MULTIPROC_DIR: another value class (here one that
    still keeps values in memory, so the test can read them)."""

    class SharedFileValue(client_values.MutexValue):
        pass

    monkeypatch.setattr(client_values, "ValueClass", SharedFileValue)
    yield


async def test_multiprocess_mode_records_through_prometheus_client(
    multiprocess_mode: None,
) -> None:
    registry = CollectorRegistry()
    scenario = Scenario()
    observer = PrometheusObserver(registry)
    assert observer._m._client  # recording through Counter and Histogram objects
    async with create_memory_bus(observer=observer) as bus:
        await run_scenario(bus, scenario)
    for (name, labels), value in scenario.expected("memory").items():
        got = registry.get_sample_value(name, dict(labels))
        assert (got or 0.0) == value, (name, labels, got, value)
