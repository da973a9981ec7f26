"""The benchmark suite runs end to end (``python -m benchmarks --smoke``) on the test brokers.

Only completion and shape are checked: every row has numbers. Timings are never asserted here;
targets live in benchmarks/README.md. FastStream rows need the ``bench`` extra, which CI does
not install; without it they must be listed as omitted, with it they must be there.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CORE_ROWS = {
    "memory.publish_consume",
    "memory.held_per_event",
    "redis.consume_c1",
    "redis.consume_c8",
    "redis.publish_awaited",
    "redis.publish_32_tasks",
    "redis.publish_many",
    "redis.latency_p50",
    "redis.latency_p99",
    "kafka.consume",
    "kafka.publish_many",
    "hooks.prometheus",
    "hooks.bundle",
    "hooks.otel_api",
}
FASTSTREAM_ROWS = {"faststream.consume_c1", "faststream.publish_awaited"}


@pytest.mark.slow  # about 22 s, mostly two Kafka group joins
@pytest.mark.redis
@pytest.mark.kafka
def test_smoke_run_reports_every_row(redis_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((tmp_path / "latest.json").read_text())
    rows = {row["id"]: row for row in report["rows"]}
    with_faststream = importlib.util.find_spec("faststream") is not None
    expected = CORE_ROWS | (FASTSTREAM_ROWS if with_faststream else set())
    assert set(rows) == expected
    omitted = {entry["module"] for entry in report["omitted"]}
    assert omitted == (set() if with_faststream else {"versus_faststream"})

    for row_id, row in rows.items():
        assert row["error"] is None, row_id
        for part in ("ours", "baseline_value", "ratio"):
            value = row[part]["median"]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (row_id, part)
    assert report["machine"]["redis_server"]
    assert (tmp_path / "latest.md").is_file()
