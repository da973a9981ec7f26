"""The fused hooks keep the last handler-call route at hand; alternating label sets still
land each call on its own topic, group and adapter."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dotmac.events import Event, create_dotmac_observability_hooks


def test_alternating_topics_groups_and_adapters_each_count_their_own_calls() -> None:
    registry = CollectorRegistry()
    hooks = create_dotmac_observability_hooks(registry, tracing=False)
    assert hooks.collector is not None
    calls = [
        ("a", "g1", "memory"),
        ("a", "g1", "memory"),
        ("a", "g2", "memory"),
        ("a", "g2", "redis"),
        ("a", "g1", "memory"),
        ("b", "g1", "memory"),
        ("b", "g1", "memory"),
    ]
    for topic, group, adapter in calls:
        with hooks.consuming(Event(topic, {}), group=group, adapter=adapter):
            pass
    report = hooks.collector.report()
    assert (report.topics["a"].consumed, report.topics["b"].consumed) == (5, 2)

    def handled(topic: str, group: str, adapter: str) -> float | None:
        labels = {"topic": topic, "group": group, "adapter": adapter, "outcome": "success"}
        return registry.get_sample_value("events_consumed_total", labels)

    assert handled("a", "g1", "memory") == 3
    assert handled("b", "g1", "memory") == 2
    assert handled("a", "g2", "memory") == 1
    assert handled("a", "g2", "redis") == 1
