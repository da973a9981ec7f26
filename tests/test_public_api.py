"""The public API: a sorted __all__ of importable names, and no optional extra imported."""

from __future__ import annotations

import subprocess
import sys

import dotmac.events

EXTRAS = (
    "redis",
    "aiokafka",
    "nats",
    "prometheus_client",
    "opentelemetry",
    "pydantic",
    "msgspec",
)


def test_all_is_sorted_and_unique() -> None:
    names = dotmac.events.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_every_name_in_all_is_importable() -> None:
    for name in dotmac.events.__all__:
        assert getattr(dotmac.events, name, None) is not None, name
    namespace: dict[str, object] = {}
    exec("from dotmac.events import *", namespace)
    assert set(dotmac.events.__all__) <= namespace.keys()


def test_core_names_are_exported() -> None:
    for name in (
        "Event",
        "EventMetadata",
        "EventBus",
        "JsonCodec",
        "ConsumerOptions",
        "RetryPolicy",
        "run_consumer",
        "create_memory_bus",
        "create_redis_bus",
        "create_kafka_bus",
        "create_nats_bus",
        "NatsConfig",
        "SimpleDLQ",
        "create_dlq_consumer",
        "log_dlq_entry",
        "alert_on_dlq_entry",
    ):
        assert name in dotmac.events.__all__, name


def test_version_is_set() -> None:
    assert isinstance(dotmac.events.__version__, str) and dotmac.events.__version__


def test_dotmac_is_a_namespace_package() -> None:
    import dotmac

    assert getattr(dotmac, "__file__", None) is None


def _extras_loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the extras found in its sys.modules."""
    probe = (
        f"{code}\nimport sys\n"
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(EXTRAS)!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def test_import_pulls_in_no_extra() -> None:
    code = (
        "import asyncio, dotmac.events\n"
        "from dotmac.events import Event, create_memory_bus, run_consumer, JsonCodec\n"
        "async def main():\n"
        "    async with create_memory_bus() as bus:\n"
        "        await bus.publish(Event('t', {'a': 1}))\n"
        "asyncio.run(main())\n"
    )
    assert _extras_loaded_after(code) == []


def test_the_probe_sees_an_extra_when_one_is_imported() -> None:
    """The check above can fail: importing the redis adapter is detected."""
    assert "redis" in _extras_loaded_after("import dotmac.events.adapters.redis")
