"""MetricsCollector: the in-process report (counts, success rate, latency, throughput)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from dotmac.events import ConfigurationError, Event, MetricsCollector, create_memory_bus
from dotmac.events.observability import collector as collector_module
from tests.support.observability import Scenario, run_scenario


async def test_report_after_scenario() -> None:
    collector = MetricsCollector()
    scenario = Scenario()
    async with create_memory_bus(observer=collector) as bus:
        await run_scenario(bus, scenario)
    report = collector.report()
    topic = report.topics[scenario.topic]
    assert topic.published == scenario.published
    assert topic.publish_errors == 0
    assert topic.consumed == scenario.successes
    assert topic.failed == scenario.failures
    assert topic.retried == scenario.retries
    assert topic.dead_lettered == scenario.bad
    assert topic.success_rate == pytest.approx(
        scenario.successes / (scenario.successes + scenario.failures)
    )
    assert topic.avg_latency_ms is not None and topic.avg_latency_ms >= 0
    assert topic.p99_latency_ms is not None and topic.p99_latency_ms >= topic.avg_latency_ms / 10
    assert topic.throughput > 0
    # Dead letters are the original records written as they are (not application publishes):
    # they count as dead-lettered on their topic, and as consumed on the DLQ topic.
    dlq = report.topics[scenario.dlq_topic]
    assert (dlq.published, dlq.consumed) == (0, scenario.bad)
    assert report.published == scenario.published
    assert report.dead_lettered == scenario.bad
    assert report.errors == 0
    text = report.format()
    assert scenario.topic in text and "p99 ms" in text
    json.dumps(report.as_dict())  # plain data


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(
        collector_module,
        "time",
        SimpleNamespace(perf_counter=fake.perf_counter, monotonic=fake.monotonic),
    )
    return fake


def handle(
    collector: MetricsCollector, clock: FakeClock, seconds: float, *, fail: bool = False
) -> None:
    event = Event("t", {})
    with pytest.raises(RuntimeError) if fail else _nothing():
        with collector.consuming(event, group="g", adapter="memory"):
            clock.now += seconds
            if fail:
                raise RuntimeError("x")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_average_is_over_all_calls_and_p99_over_the_last_samples(clock: FakeClock) -> None:
    collector = MetricsCollector(max_samples=100)
    for i in range(1, 101):  # 1 ms .. 100 ms
        handle(collector, clock, i / 1000)
    topic = collector.report().topics["t"]
    assert topic.avg_latency_ms == pytest.approx(50.5)
    assert topic.p99_latency_ms == pytest.approx(99.0)
    for _ in range(100):  # the window now holds only 1 s calls; the average keeps history
        handle(collector, clock, 1.0)
    topic = collector.report().topics["t"]
    assert topic.p99_latency_ms == pytest.approx(1000.0)
    assert topic.avg_latency_ms == pytest.approx((5050 + 100_000) / 200)


def test_success_rate_and_throughput_over_the_window(clock: FakeClock) -> None:
    collector = MetricsCollector(window=10.0)
    for _ in range(30):
        handle(collector, clock, 0.0)
    handle(collector, clock, 0.0, fail=True)
    clock.now += 10.0  # 31 calls in the first second of a 10 s window
    report = collector.report()
    assert report.topics["t"].success_rate == pytest.approx(30 / 31)
    assert report.topics["t"].throughput == pytest.approx(31 / 10.0)
    clock.now += 30.0  # nothing in the last window
    assert collector.report().topics["t"].throughput == 0.0
    collector.reset()
    assert collector.report().topics == {}


def test_cancelled_handler_is_not_an_outcome(clock: FakeClock) -> None:
    import asyncio

    collector = MetricsCollector()
    with pytest.raises(asyncio.CancelledError):
        with collector.consuming(Event("t", {}), group="g", adapter="memory"):
            raise asyncio.CancelledError
    topic = collector.report().topics["t"]
    assert (topic.consumed, topic.failed, topic.success_rate) == (0, 0, None)


def test_validation() -> None:
    with pytest.raises(ConfigurationError, match="max_samples"):
        MetricsCollector(max_samples=0)
    with pytest.raises(ConfigurationError, match="window"):
        MetricsCollector(window=0)
