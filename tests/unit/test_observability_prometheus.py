"""Prometheus metrics and backlog gauges on the memory bus: exact counts, labels, registries."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dotmac.events import ConfigurationError, Event, MemoryBus, Reject, create_memory_bus
from dotmac.events.bus import BacklogStats
from dotmac.events.errors import TransportError
from dotmac.events.observability.prometheus import METRIC_NAMES, BacklogMonitor, PrometheusObserver
from tests.support.observability import Scenario, eventually, run_scenario


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


async def test_scenario_counts_are_exact() -> None:
    registry = CollectorRegistry()
    scenario = Scenario()
    bus = create_memory_bus(observer=PrometheusObserver(registry))
    async with bus:
        outcome = await run_scenario(bus, scenario)
    assert len(outcome.dead) == scenario.bad
    for (name, labels), value in scenario.expected("memory").items():
        got = registry.get_sample_value(name, dict(labels))
        assert (got or 0.0) == value, (name, labels, got, value)
    # Nothing counted that the scenario did not do: no errors, no other topics or groups.
    assert samples(registry, "events_errors_total") == {}
    consumed = samples(registry, "events_consumed_total")
    assert sum(consumed.values()) == scenario.successes + scenario.failures + scenario.bad


async def test_publish_failure_is_counted_as_error() -> None:
    registry = CollectorRegistry()
    async with create_memory_bus(observer=PrometheusObserver(registry)) as bus:
        with pytest.raises(ValueError):
            await bus.publish(Event("t", {"bad": object()}))
    labels = {"topic": "t", "adapter": "memory", "outcome": "error"}
    assert registry.get_sample_value("events_published_total", labels) == 1.0
    assert (
        registry.get_sample_value(
            "event_publish_duration_seconds_count", {"topic": "t", "adapter": "memory"}
        )
        == 1.0
    )


async def test_tenant_label_only_when_asked() -> None:
    plain, tenanted = CollectorRegistry(), CollectorRegistry()
    for registry, tenant_label in ((plain, False), (tenanted, True)):
        observer = PrometheusObserver(registry, tenant_label=tenant_label)
        async with create_memory_bus(observer=observer) as bus:
            await bus.publish(Event("t", {}, tenant_id="acme"))
            await bus.publish(Event("t", {}))
    assert samples(plain, "events_published_total") == {
        (("adapter", "memory"), ("outcome", "success"), ("topic", "t")): 2.0
    }
    assert samples(tenanted, "events_published_total") == {
        (("adapter", "memory"), ("outcome", "success"), ("tenant_id", "acme"), ("topic", "t")): 1.0,
        (("adapter", "memory"), ("outcome", "success"), ("tenant_id", ""), ("topic", "t")): 1.0,
    }


async def test_private_groups_and_inboxes_do_not_create_series_per_process() -> None:
    registry = CollectorRegistry()
    async with create_memory_bus(observer=PrometheusObserver(registry)) as bus:

        async def echo(event: Event) -> str:
            return "pong"

        await bus.subscribe("ping", echo)  # private group
        assert await bus.request("ping", {}, timeout=5) == "pong"
    consumed = samples(registry, "events_consumed_total")
    groups = {dict(labels)["group"] for labels in consumed}
    topics = {dict(labels)["topic"] for labels in consumed}
    assert groups == {"private"}
    assert topics == {"ping", "_inbox"}


def test_registry_sharing_and_validation() -> None:
    registry = CollectorRegistry()
    first = PrometheusObserver(registry)
    second = PrometheusObserver(registry)  # a second bus on the same registry
    assert first._m is second._m
    with pytest.raises(ConfigurationError, match="tenant_label"):
        PrometheusObserver(registry, tenant_label=True)
    with pytest.raises(ConfigurationError, match="registry"):
        PrometheusObserver(object())  # type: ignore[arg-type]


def test_names_taken_by_other_metrics_give_configuration_error() -> None:
    from prometheus_client import Counter

    registry = CollectorRegistry()
    Counter("events_published_total", "someone else's", registry=registry)
    with pytest.raises(ConfigurationError, match="registry"):
        PrometheusObserver(registry)


# --- backlog gauges -----------------------------------------------------------------------------


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_backlog_gauges_match_bus_stats() -> None:
    registry = CollectorRegistry()
    monitor = BacklogMonitor(registry)
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow(event: Event) -> None:
        started.set()
        await gate.wait()

    async def reject(event: Event) -> None:
        raise Reject("no")

    async with create_memory_bus() as bus:
        rejecter = await bus.subscribe("jobs", reject, group="rejecter")
        await rejecter.close()  # the group now lags behind everything published below
        sub = await bus.subscribe("jobs", slow, group="g")
        for i in range(3):
            await bus.publish(Event("jobs", {"i": i}))
        await started.wait()
        monitor.watch(bus, "jobs", "g")
        monitor.watch(bus, "jobs", "rejecter")
        await monitor.refresh()
        stats = await bus.stats("jobs", "g")
        assert (stats.length, stats.lag, stats.pending) == (3, 0, 3)
        assert gauge(registry, "events_topic_length", topic="jobs", adapter="memory") == 3
        assert gauge(registry, "events_pending", topic="jobs", adapter="memory", group="g") == 3
        assert (
            gauge(registry, "events_consumer_lag", topic="jobs", adapter="memory", group="g") == 0
        )
        lag = gauge(
            registry, "events_consumer_lag", topic="jobs", adapter="memory", group="rejecter"
        )
        assert lag == (await bus.stats("jobs", "rejecter")).lag == 3
        assert gauge(registry, "events_dlq_depth", topic="jobs", adapter="memory") == 0

        gate.set()
        rejecter = await bus.subscribe("jobs", reject, group="rejecter")

        async def dlq_full() -> bool:
            return (await bus.stats("jobs", "rejecter")).dlq_depth == 3

        await eventually(dlq_full)
        await sub.close()
        await rejecter.close()
        await monitor.refresh()
        stats = await bus.stats("jobs", "g")
        assert gauge(registry, "events_pending", topic="jobs", adapter="memory", group="g") == (
            stats.pending
        )
        assert gauge(registry, "events_dlq_depth", topic="jobs", adapter="memory") == 3
        # The memory bus cannot tell the oldest pending age: the gauge is left out, not zero.
        assert (
            gauge(
                registry,
                "events_oldest_pending_age_seconds",
                topic="jobs",
                adapter="memory",
                group="g",
            )
            is None
        )


class _BrokenStats(MemoryBus):
    def __init__(self, *, hang: bool) -> None:
        super().__init__()
        self.hang = hang
        self.broken = False

    async def stats(
        self, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> BacklogStats:
        if not self.broken:
            return await super().stats(topic, group, dlq_topic=dlq_topic)
        if self.hang:
            await asyncio.sleep(60)
        raise TransportError("broker gone")


@pytest.mark.parametrize("hang", [False, True], ids=["raises", "hangs"])
async def test_failed_query_drops_samples_until_it_recovers(hang: bool) -> None:
    registry = CollectorRegistry()
    monitor = BacklogMonitor(registry, timeout=0.2)
    bus = _BrokenStats(hang=hang)
    await bus.publish(Event("t", {}))
    monitor.watch(bus, "t", "g")
    await monitor.refresh()
    assert gauge(registry, "events_topic_length", topic="t", adapter="memory") == 1
    bus.broken = True
    async with asyncio.timeout(2):
        await monitor.refresh()
    assert gauge(registry, "events_topic_length", topic="t", adapter="memory") is None
    bus.broken = False
    await monitor.refresh()
    assert gauge(registry, "events_topic_length", topic="t", adapter="memory") == 1
    await bus.close()


async def test_background_refresh_and_scrape_from_another_thread() -> None:
    registry = CollectorRegistry()
    async with create_memory_bus() as bus:
        async with BacklogMonitor(registry, interval=0.02) as monitor:
            monitor.watch(bus, "t")
            for _ in range(4):
                await bus.publish(Event("t", {}))
            await eventually(
                lambda: gauge(registry, "events_topic_length", topic="t", adapter="memory") == 4
            )
            scraped: list[bytes] = []
            thread = threading.Thread(target=lambda: scraped.append(generate_latest(registry)))
            thread.start()
            thread.join(5)
            assert b'events_topic_length{adapter="memory",topic="t"} 4.0' in scraped[0]
            monitor.unwatch(bus, "t")
            await monitor.refresh()
            assert gauge(registry, "events_topic_length", topic="t", adapter="memory") is None
        assert monitor._task is None
        await monitor.stop()  # idempotent


def test_backlog_monitor_validation() -> None:
    registry = CollectorRegistry()
    BacklogMonitor(registry)
    with pytest.raises(ConfigurationError, match="registry"):
        BacklogMonitor(registry)
    for kwargs, field in (
        ({"interval": 0}, "interval"),
        ({"timeout": -1}, "timeout"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ):
        with pytest.raises(ConfigurationError, match=field):
            BacklogMonitor(CollectorRegistry(), **kwargs)  # type: ignore[arg-type]


async def test_every_declared_name_is_exported() -> None:
    registry = CollectorRegistry()
    scenario = Scenario(ok=1, flaky=1, bad=1)
    monitor = BacklogMonitor(registry)
    async with create_memory_bus(observer=PrometheusObserver(registry)) as bus:
        await run_scenario(bus, scenario)
        monitor.watch(bus, scenario.topic, scenario.group)
        await monitor.refresh()
    names = {family.name for family in registry.collect()}
    # prometheus_client drops the _total suffix from counter family names.
    declared = {n.removesuffix("_total") for n in METRIC_NAMES}
    missing = declared - names
    assert not missing
