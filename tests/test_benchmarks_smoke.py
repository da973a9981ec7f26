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
    "cluster.consume_c1",
    "cluster.publish_awaited",
    "cluster.publish_many",
    "cluster.spread_masters",
    "nats.consume",
    "nats.publish_awaited",
    "nats.publish_many",
    "hooks.prometheus",
    "hooks.bundle",
    "hooks.otel_api",
}
FASTSTREAM_ROWS = {"faststream.consume_c1", "faststream.publish_awaited"}


@pytest.mark.slow  # about 25 s, mostly two Kafka group joins
@pytest.mark.redis
@pytest.mark.kafka
@pytest.mark.redis_cluster
@pytest.mark.nats
def test_smoke_run_reports_every_row(
    redis_url: str, kafka_bootstrap: str, redis_cluster_url: str, nats_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_CLUSTER_URL": redis_cluster_url,
        "NATS_URL": nats_url,
    }
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
    for broker in ("redis_server", "redis_cluster", "kafka_broker", "nats_server"):
        assert report["machine"][broker], broker

    # the spread behind cluster.spread_masters: every event counted on a partition and a master
    spread = report["details"]["Redis Cluster: events per master and per partition, last keyed run"]
    for side in ("ours", "baseline"):
        counts = spread[side]["events_per_partition"]
        assert len(counts) == 16 and sum(counts) == report["settings"]["cluster_events"], side
        assert sum(spread[side]["events_per_master"].values()) == sum(counts), side
    held = spread["ours"]["partitions_per_master"].values()
    assert len(held) == 3 and min(held) > 0  # the chosen hash tags reach every master
    assert "events per master and per partition" in (tmp_path / "latest.md").read_text()
