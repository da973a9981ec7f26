"""ObservabilityHooks' fused path records what its parts would have recorded on their own."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dotmac.events import (
    CompositeObserver,
    Event,
    MetricsCollector,
    Observer,
    create_default_hooks,
    create_dotmac_observability_hooks,
)
from dotmac.events.observability.hooks import ObservabilityHooks
from dotmac.events.observability.logs import LoggingObserver
from dotmac.events.observability.prometheus import PrometheusObserver

PRIVATE_GROUP = "private-" + "0" * 32


EVENTS = [
    Event("orders", {}, tenant_id="acme"),
    Event("orders", {}, tenant_id="other"),
    Event("_inbox.abc", {}),
    Event("users", {}),
]


def _drive(observer: Observer) -> None:
    """Publishes and handler calls with every outcome, on a few label sets, twice each so
    reused call objects are exercised."""
    events = EVENTS
    for _ in range(2):
        for event in events:
            for group in ("g", PRIVATE_GROUP):
                with observer.consuming(event, group=group, adapter="memory"):
                    pass
                with pytest.raises(ValueError):
                    with observer.consuming(event, group=group, adapter="memory"):
                        raise ValueError("boom")
                with pytest.raises(asyncio.CancelledError):
                    with observer.consuming(event, group=group, adapter="memory"):
                        raise asyncio.CancelledError
            with observer.publishing(event, adapter="memory") as headers:
                assert dict(headers) == {}
            with pytest.raises(ConnectionError):
                with observer.publishing(event, adapter="memory"):
                    raise ConnectionError("down")


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Every sample but durations and creation times, which depend on the clock."""
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith(("_created", "_sum", "_bucket")):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _figures(collector: MetricsCollector) -> dict[str, tuple[Any, ...]]:
    report = collector.report()
    return {
        name: (
            t.published,
            t.publish_errors,
            t.consumed,
            t.failed,
            t.success_rate,
            t.avg_latency_ms is None,
            t.p99_latency_ms is None,
            t.publish_avg_latency_ms is None,
        )
        for name, t in report.topics.items()
    }


def _unfused(
    registry: CollectorRegistry, logger: logging.Logger, *, tenant: bool
) -> tuple[CompositeObserver, MetricsCollector]:
    collector = MetricsCollector()
    parts: list[Observer] = [
        LoggingObserver(logger),
        collector,
        PrometheusObserver(registry, tenant_label=tenant),
    ]
    return CompositeObserver(parts), collector


@pytest.mark.parametrize("tenant", [False, True])
@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_fused_hooks_record_what_the_parts_record(
    tenant: bool, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    fused_registry, plain_registry = CollectorRegistry(), CollectorRegistry()
    hooks = create_dotmac_observability_hooks(
        fused_registry, tenant_metrics=tenant, tracing=False, logger=logging.getLogger("fused")
    )
    assert "consuming" in vars(hooks)  # the fused path is in use
    plain, plain_collector = _unfused(plain_registry, logging.getLogger("plain"), tenant=tenant)
    with caplog.at_level(level):
        _drive(hooks)
        _drive(plain)
    assert _samples(fused_registry) == _samples(plain_registry)
    assert hooks.collector is not None
    assert _figures(hooks.collector) == _figures(plain_collector)
    fused_count = sum(
        s.value
        for f in fused_registry.collect()
        for s in f.samples
        if s.name == "event_consume_duration_seconds_count"
    )
    assert fused_count == 2 * 4 * 2 * 3  # every handler call, cancelled ones included

    def lines(name: str) -> list[tuple[int, str]]:
        # Durations differ between the two runs; the rest of each line must not.
        return [
            (r.levelno, r.getMessage().rsplit(" in ", 1)[0])
            for r in caplog.records
            if r.name == name
        ]

    assert lines("fused") == lines("plain")
    if level == logging.DEBUG:
        assert any("handled" in m for _, m in lines("fused"))
        assert any("handler failed" in m for _, m in lines("fused"))
    else:
        assert all(lvl >= logging.WARNING for lvl, _ in lines("fused"))
        assert lines("fused")  # failed publishes warn


def test_debug_switched_on_after_calls_were_cached(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("fused.switch")
    hooks = create_default_hooks(logger=logger)
    event = Event("t", {})
    logger.setLevel(logging.INFO)
    try:
        with hooks.consuming(event, group="g", adapter="memory"):
            pass
        with caplog.at_level(logging.DEBUG, logger="fused.switch"):
            with hooks.consuming(event, group="g", adapter="memory"):
                pass
        logger.disabled = True
        with caplog.at_level(logging.DEBUG, logger="fused.switch"):
            with hooks.consuming(event, group="g", adapter="memory"):
                pass
    finally:
        logger.disabled = False
        logger.setLevel(logging.NOTSET)
    handled = [r for r in caplog.records if r.name == "fused.switch" and "handled" in r.message]
    assert len(handled) == 1


def test_collector_reset_is_seen_by_the_fused_path() -> None:
    hooks = create_default_hooks()
    assert hooks.collector is not None
    event = Event("t", {})
    for _ in range(3):
        with hooks.consuming(event, group="g", adapter="memory"):
            pass
    with hooks.publishing(event, adapter="memory"):
        pass
    assert hooks.collector.report().consumed == 3
    hooks.collector.reset()
    assert hooks.collector.report().topics == {}
    with hooks.consuming(event, group="g", adapter="memory"):
        pass
    report = hooks.collector.report()
    assert (report.consumed, report.published) == (1, 0)
    assert report.topics["t"].throughput > 0
    assert report.topics["t"].avg_latency_ms is not None


def test_throughput_counts_every_call_in_its_second() -> None:
    hooks = create_default_hooks()
    assert hooks.collector is not None
    event = Event("t", {})
    for _ in range(5):
        with hooks.consuming(event, group="g", adapter="memory"):
            pass
    topic = hooks.collector._topics["t"]
    assert topic.consumed + topic.failed - topic.mark + sum(n for _, n in topic.buckets) == 5
    assert hooks.collector._throughput(topic, topic.until - 0.5) == 5.0  # within the first second


def test_nested_calls_on_one_label_set_each_get_their_own_object() -> None:
    hooks = create_default_hooks()
    event = Event("t", {})
    outer = hooks.consuming(event, group="g", adapter="memory")
    with outer:
        inner = hooks.consuming(event, group="g", adapter="memory")
        assert inner is not outer
        with inner:
            pass
    assert hooks.collector is not None
    assert hooks.collector.report().consumed == 2


def test_parts_that_are_subclasses_are_not_fused(caplog: pytest.LogCaptureFixture) -> None:
    class Loud(LoggingObserver):
        pass

    hooks = ObservabilityHooks(logging_observer=Loud(), collector=MetricsCollector())
    assert "consuming" not in vars(hooks)
    with hooks.consuming(Event("t", {}), group="g", adapter="memory"):
        pass
    assert hooks.collector is not None
    assert hooks.collector.report().consumed == 1


def test_tracing_and_extra_observers_still_wrap_the_fused_parts() -> None:
    seen: list[str] = []

    class Extra:
        def publishing(self, event: Event, *, adapter: str) -> Any:
            seen.append("publishing")
            return _Record(seen, "publish")

        def consuming(self, event: Event, *, group: str, adapter: str) -> Any:
            seen.append("consuming")
            return _Record(seen, "consume")

        def retried(self, *args: Any, **kwargs: Any) -> None: ...
        def dead_lettered(self, *args: Any, **kwargs: Any) -> None: ...
        def error(self, *args: Any, **kwargs: Any) -> None: ...

    collector = MetricsCollector()
    hooks = ObservabilityHooks(
        logging_observer=LoggingObserver(), collector=collector, extra=[Extra()]
    )
    with hooks.consuming(Event("t", {}), group="g", adapter="memory"):
        pass
    with hooks.publishing(Event("t", {}), adapter="memory") as headers:
        assert headers == {"x": "1"}
    assert seen == ["consuming", "consume exit", "publishing", "publish exit"]
    report = collector.report()
    assert (report.consumed, report.published) == (1, 1)


class _Record:
    def __init__(self, seen: list[str], name: str) -> None:
        self.seen, self.name = seen, name

    def __enter__(self) -> dict[str, str]:
        return {"x": "1"}

    def __exit__(self, *exc: object) -> None:
        self.seen.append(f"{self.name} exit")


async def test_the_fused_bundle_works_under_exit_stack_as_publish_many_uses_it() -> None:
    """publish_many enters one publishing() per event through contextlib.ExitStack, which
    calls type(cm).__enter__(cm): the fused calls must be ordinary context managers."""
    from prometheus_client import CollectorRegistry

    from dotmac.events import Event, create_dotmac_observability_hooks, create_memory_bus

    hooks = create_dotmac_observability_hooks(CollectorRegistry(), tracing=False)
    bus = create_memory_bus(observer=hooks)
    seen: list[int] = []

    async def handle(event: Event) -> None:
        seen.append(event.payload)

    await bus.subscribe("t", handle, group="g")
    await bus.publish_many([Event("t", n) for n in range(5)])
    for _ in range(200):
        if len(seen) == 5:
            break
        await asyncio.sleep(0.01)
    await bus.close()
    assert sorted(seen) == [0, 1, 2, 3, 4]
