"""Every Python block in README.md runs, against real brokers where it needs one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)

# What a block must print, keyed by a line that identifies the block.
EXPECTED = {
    "handle_user_created": "User created: {'user_id': 123",
    "calculate.sum": "Sum: 15",
    "prefetch_count=lots": "bus url refused:",
    "lifespan(None)": "welcome ada@example.com",
    "def add_up": "replayed 4 events: {'shop-1': 60, 'shop-2': 40}",
    "OrderPlaced": "ship order 7 (order-placed.v1)",
    "remind": "delivered after 14 days: ['trial ends'] still held: 1",
    "charge": "handled (order, attempt): [(2, 1), (3, 1), (1, 3)]",
    "router.batch_handler": "loaded: [-3, 1, 2, 4]",
    "on_user": "pattern saw: ['user.created', 'user.deleted'] of ['user.created', "
    "'user.deleted', 'user.eu.created']",
    "tenant_required": "router stopped: [('user.created', 'ada@example.com'), "
    "('user.login', 'acme'), ('user.logout', 'acme')]",
    "negative amount": "[('Reject', 'negative amount', 1)]",
    "card declined": "replayed 3 skipped 1",
    "validate_schema": "user_id is required",
    "REDIS_URL": "order 1, delivery 1",
    "KAFKA_BOOTSTRAP_SERVERS": "order 1 from partition",
    "NATS_URL": "order 1, delivery 1, seq ",
    "REDIS_CLUSTER_URL": "order 1 from partition ",
    "secure-password": "sasl_username='event-service'",
}


def _block_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line.strip() and "import" not in line)
    return re.sub(r"\W+", "-", first.strip())[:40]


@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_readme_block_runs(block: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = dict(os.environ)
    if "REDIS_URL" in block:
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    if "KAFKA_BOOTSTRAP_SERVERS" in block:
        env["KAFKA_BOOTSTRAP_SERVERS"] = request.getfixturevalue("kafka_bootstrap")
    if "NATS_URL" in block:
        env["NATS_URL"] = request.getfixturevalue("nats_url")
    if "REDIS_CLUSTER_URL" in block:
        env["REDIS_CLUSTER_URL"] = request.getfixturevalue("redis_cluster_url")
    if "ConformanceSuite" in block:
        path = tmp_path / "test_readme_suite.py"
        path.write_text(block)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            str(path),
        ]
    else:
        path = tmp_path / "block.py"
        path.write_text(block)
        command = [sys.executable, str(path)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for marker, expected in EXPECTED.items():
        if marker in block:
            assert expected in done.stdout, done.stdout
    if "secure-password" in block:
        assert "secure-password" not in done.stdout
    if "ConformanceSuite" in block:
        assert re.search(r"\b[2-9]\d passed\b", done.stdout), done.stdout
