"""A virtualenv with dotmac-events and orjson only: the memory bus works, extras say how to install.

The venv is real: the project is built into a wheel and installed with pip next to orjson, and
the checks run in that venv's interpreter from a directory outside the source tree.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import importlib.util
    import sys

    EXTRAS = (
        "redis", "aiokafka", "nats", "prometheus_client", "opentelemetry", "click", "rich",
        "pydantic", "msgspec",
    )
    assert [m for m in EXTRAS if importlib.util.find_spec(m) is not None] == [], "not a bare venv"

    import dotmac.events
    from dotmac.events import (
        ConsumerOptions, Event, Reject, create_kafka_bus, create_memory_bus, create_nats_bus,
        create_redis_bus, run_consumer,
    )

    assert dotmac.events.__file__.startswith(sys.prefix), dotmac.events.__file__
    assert not [m for m in sys.modules if m.split(".")[0] in EXTRAS]

    async def main():
        handled, dead = [], []
        done = asyncio.Event()

        async def handler(event):
            if event.payload["n"] == 3:
                raise Reject("three is bad")
            handled.append(event.payload["n"])
            if len(handled) == 4:
                done.set()

        async def on_dead(event):
            dead.append(event.headers["kafka_dlt-original-topic"])  # the original, plus headers

        async with create_memory_bus() as bus:
            await bus.subscribe("jobs.DLQ", on_dead, group="dlq")
            await run_consumer(bus, "jobs", handler, ConsumerOptions(max_retries=1), group="w")
            for n in range(5):
                await bus.publish(Event("jobs", {"n": n}))
            await asyncio.wait_for(done.wait(), 10)
            while not dead:
                await asyncio.sleep(0.01)
        assert sorted(handled) == [0, 1, 2, 4], handled
        assert dead == ["jobs"], dead

    asyncio.run(main())

    for factory, extra in (
        (create_redis_bus, "redis"), (create_kafka_bus, "kafka"), (create_nats_bus, "nats")
    ):
        try:
            factory()
        except ImportError as exc:
            hint = f'pip install "dotmac-events[{extra}]"'
            assert hint in str(exc), str(exc)
        else:
            raise AssertionError(f"{factory.__name__} worked without the {extra} extra")

    import dotmac.events.cli
    assert not [m for m in sys.modules if m.split(".")[0] in EXTRAS]

    print("OK")
    """
)


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding this project's wheel and orjson, nothing else (~5 s to build)."""
    where = tmp_path_factory.mktemp("bare")
    python = where / "venv" / "bin" / "python"
    wheels = where / "wheels"
    build = ["wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(wheels), str(ROOT)]
    steps = [
        [sys.executable, "-m", "venv", "--without-pip", str(where / "venv")],
        [sys.executable, "-m", "pip", *build],
    ]
    for step in steps:
        result = _run(step, where, 60)
        assert result.returncode == 0, f"{step}: {result.stderr}"
    (wheel,) = wheels.glob("dotmac_events-*.whl")
    orjson = f"orjson=={importlib.metadata.version('orjson')}"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    result = _run([*pip, "install", "-q", "--no-deps", str(wheel), orjson], where, 90)
    assert result.returncode == 0, result.stderr
    installed = _run([*pip, "list", "--format=freeze"], where, 60).stdout
    assert sorted(ln.split("==")[0].lower() for ln in installed.split()) == [
        "dotmac-events",
        "orjson",
    ], installed
    return python


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bare_venv_runs_the_memory_bus_and_names_the_extras(
    bare_python: Path, tmp_path: Path
) -> None:
    result = _run([str(bare_python), "-c", SCRIPT], tmp_path, 60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bare_venv_star_import(bare_python: Path, tmp_path: Path) -> None:
    """Every name in ``__all__`` imports without extras (extra-backed classes stay out of it)."""
    result = _run([str(bare_python), "-c", "from dotmac.events import *"], tmp_path, 60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bare_venv_cli_names_the_cli_extra(bare_python: Path, tmp_path: Path) -> None:
    """Without click and rich, ``dotmac-events`` prints the install line and exits non-zero."""
    result = _run([str(bare_python), "-m", "dotmac.events", "demo"], tmp_path, 60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        'dotmac-events: the command line needs click and rich: pip install "dotmac-events[cli]"'
    ]
