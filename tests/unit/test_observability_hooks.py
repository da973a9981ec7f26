"""Default hooks, the seed's create_dotmac_observability_hooks, logging, and optional imports."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

import dotmac.events
from dotmac.events import (
    CompositeObserver,
    ConfigurationError,
    Observer,
    create_default_hooks,
    create_dotmac_observability_hooks,
    create_memory_bus,
)
from tests.support.observability import Scenario, run_scenario


async def test_default_hooks_log_and_collect(caplog: pytest.LogCaptureFixture) -> None:
    hooks = create_default_hooks()
    assert isinstance(hooks, Observer) and isinstance(hooks, CompositeObserver)
    assert hooks.prometheus is None and hooks.tracing is None
    scenario = Scenario(ok=2, flaky=1, bad=1, max_retries=1)
    with caplog.at_level(logging.INFO, logger="dotmac.events.hooks"):
        async with create_memory_bus(observer=hooks) as bus:
            await run_scenario(bus, scenario)
    assert hooks.collector is not None
    topic = hooks.collector.report().topics[scenario.topic]
    assert (topic.consumed, topic.failed, topic.dead_lettered) == (3, 3, 1)
    records = [r for r in caplog.records if r.name == "dotmac.events.hooks"]
    retries = [r for r in records if r.levelno == logging.WARNING and "retrying" in r.message]
    dead = [r for r in records if r.levelno == logging.ERROR and "dead-lettered" in r.message]
    assert len(retries) == scenario.retries
    assert len(dead) == scenario.bad
    assert all('"kind"' not in r.message and "'kind'" not in r.message for r in records)


async def test_debug_logging_covers_every_publish_and_handling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = create_default_hooks()
    scenario = Scenario(ok=2, flaky=0, bad=0)
    with caplog.at_level(logging.DEBUG, logger="dotmac.events.hooks"):
        async with create_memory_bus(observer=hooks) as bus:
            await run_scenario(bus, scenario)
    messages = [r.message for r in caplog.records if r.name == "dotmac.events.hooks"]
    assert sum("published" in m for m in messages) == 2
    assert sum("handled" in m for m in messages) == 2


async def test_seed_call_shape_with_a_prometheus_registry() -> None:
    registry = CollectorRegistry()
    hooks = create_dotmac_observability_hooks(metrics_registry=registry, tenant_metrics=True)
    assert hooks.prometheus is not None and hooks.prometheus.tenant_label
    assert hooks.tracing is not None  # opentelemetry-api is installed here
    async with create_memory_bus(observer=hooks) as bus:
        await bus.publish(dotmac.events.Event("t", {}, tenant_id="acme"))
    labels = {"topic": "t", "adapter": "memory", "outcome": "success", "tenant_id": "acme"}
    assert registry.get_sample_value("events_published_total", labels) == 1.0
    assert hooks.collector is not None
    assert hooks.collector.report().published == 1


def test_hooks_options() -> None:
    registry = CollectorRegistry()
    hooks = create_dotmac_observability_hooks(registry, tracing=False)
    assert hooks.tracing is None and hooks.prometheus is not None
    assert not hooks.prometheus.tenant_label
    with pytest.raises(ConfigurationError, match="registry"):
        create_dotmac_observability_hooks(metrics_registry="prometheus")  # type: ignore[arg-type]


def test_core_import_pulls_in_no_extra() -> None:
    code = (
        "import sys, dotmac.events as e\n"
        "e.create_default_hooks()\n"
        "e.HealthChecker(e.create_memory_bus())\n"
        "extras = ('prometheus_client', 'opentelemetry')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in extras]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("dotmac.events.observability.prometheus", "prometheus_client", "prometheus"),
        ("dotmac.events.observability.otel", "opentelemetry", "otel"),
    ],
)
def test_missing_extra_names_the_pip_line(
    monkeypatch: pytest.MonkeyPatch, module: str, blocked: str, extra: str
) -> None:
    for name in [m for m in sys.modules if m == blocked or m.startswith(blocked + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf'pip install "dotmac-events\[{extra}\]"'):
        importlib.import_module(module)
    if extra == "prometheus":
        with pytest.raises(ImportError, match=r"dotmac-events\[prometheus\]"):
            create_dotmac_observability_hooks()
