"""``dotmac-events publish`` / ``stats`` / ``worker MODULE`` as real processes on real brokers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "pw-never-shown-42"


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotmac.events", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
    )


def _row(output: str, metric: str) -> str:
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃| \n").split("│") if c.strip()]
        if cells and cells[0] == metric:
            return cells[-1]
    raise AssertionError(f"no {metric} row in:\n{output}")


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_publish_then_stats_on_redis(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    for n in range(3):
        done = _cli("publish", "orders", f'{{"n": {n}}}', "--bus", url, "--key", "c")
        assert done.returncode == 0, done.stderr
    done = _cli("stats", "orders", "--bus", url, "--group", "billing")
    assert done.returncode == 0, done.stderr
    assert _row(done.stdout, "length") == "3"
    assert _row(done.stdout, "dlq_depth") in ("0", "-")


@pytest.mark.kafka
@pytest.mark.timeout(60)
def test_publish_then_stats_on_kafka(kafka_bootstrap: str) -> None:
    url = f"kafka://{kafka_bootstrap}?num_partitions=1&linger_ms=0"
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    for n in range(2):
        done = _cli("publish", topic, f'{{"n": {n}}}', "--bus", url)
        assert done.returncode == 0, done.stderr
    done = _cli("stats", topic, "--bus", url, "--group", "billing")
    assert done.returncode == 0, done.stderr
    assert _row(done.stdout, "length") == "2"


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_env_var_names_the_bus(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DOTMAC_EVENTS_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "dotmac.events", "publish", "t", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_worker_runs_a_modules_event_handlers(redis_url: str, tmp_path: Path) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:&block_ms=200"
    topic = "jobs"
    for n in range(5):
        assert _cli("publish", topic, f'{{"n": {n}}}', "--bus", url).returncode == 0
    record = tmp_path / "handled.txt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dotmac.events",
            "worker",
            "tests.faults.worker_app_default",
            "--bus",
            url,
            "--drain-timeout",
            "5",
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "WORKER_TOPIC": topic,
            "WORKER_RECORD": str(record),
        },
    )
    try:
        deadline = time.monotonic() + 30
        while not (record.exists() and len(record.read_text().split()) >= 5):
            assert time.monotonic() < deadline and proc.poll() is None, "worker did not handle 5"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "worker ready: 1 handler(s)" in err
    assert sorted(int(n) for n in record.read_text().split()) == list(range(5))


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_worker_never_shows_the_password(redis_url: str) -> None:
    base = redis_url.split("://", 1)[1]
    url = f"redis://nobody:{SECRET}@{base}?connection_timeout=2"
    done = _cli("worker", "tests.faults.worker_app:router", "--bus", url, "--log-level", "debug")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert "***" in done.stderr
