"""examples/grafana-dashboard.json imports cleanly and queries only metrics we export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from dotmac.events import create_memory_bus
from dotmac.events.observability.prometheus import METRIC_NAMES, BacklogMonitor, PrometheusObserver

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json"
METRIC = re.compile(r"\bevents?_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name prometheus.py can produce, read from a real registry."""
    registry = CollectorRegistry()
    PrometheusObserver(registry)
    BacklogMonitor(registry)
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ())
    }


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_is_importable_json() -> None:
    dashboard = load()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            assert expr.count("rate(") + expr.count("increase(") <= expr.count("[")
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "adapter", "topic", "group"} <= names


def test_every_metric_used_is_exported_and_every_metric_is_shown() -> None:
    exported = exported_names()
    used = {name for expr in queries(load()) for name in METRIC.findall(expr)}
    assert used, "no metric names found in the dashboard"
    assert used <= exported, sorted(used - exported)
    families = {n.removesuffix("_total") for n in METRIC_NAMES}
    shown = {re.sub(r"(_total|_bucket|_sum|_count)$", "", n) for n in used}
    assert families <= shown, sorted(families - shown)


async def test_exported_names_are_what_a_live_bus_produces() -> None:
    # The name set above comes from the registry's families; a live bus must fill the same names.
    registry = CollectorRegistry()
    monitor = BacklogMonitor(registry)
    async with create_memory_bus(observer=PrometheusObserver(registry)) as bus:
        from dotmac.events import Event

        await bus.publish(Event("t", {}))
        monitor.watch(bus, "t", "g")
        await monitor.refresh()
    samples = {s.name for family in registry.collect() for s in family.samples}
    assert {"events_published_total", "event_publish_duration_seconds_bucket"} <= samples
    assert {"events_topic_length", "events_dlq_depth"} <= samples
    assert samples <= exported_names() | {
        "events_published_created",
        "event_publish_duration_seconds_created",
    }
