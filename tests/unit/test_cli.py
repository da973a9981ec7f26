"""The demo command: its numbers follow from its failure pattern, and both entry points run it."""

from __future__ import annotations

import subprocess
import sys

from dotmac.events.cli import run_demo


async def test_demo_numbers_follow_from_the_failure_pattern() -> None:
    summary = await run_demo(events=300, concurrency=4)
    # Orders 1..300: every 50th always fails (6 -> DLQ after 3 attempts, 2 retries each),
    # every other 10th fails once (24 retries), the rest succeed first time.
    assert summary["published"] == 300
    assert summary["handled"] == 294
    assert summary["dead_lettered"] == 6
    assert summary["attempts_per_dead_letter"] == 3
    assert summary["retried"] == 24 + 6 * 2


def test_python_dash_m_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dotmac.events", "demo", "--events", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "dead_lettered             2" in done.stdout
