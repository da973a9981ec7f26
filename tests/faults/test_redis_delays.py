"""Delayed events live in Redis, not in our processes: the publisher is SIGKILLed right after
publishing, no process of ours runs while the first events fall due, a consumer starts, is
SIGKILLed, and another starts. Every event is delivered, none early, and those that fall due
while a consumer runs arrive within the mover's poll interval."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PROC = Path(__file__).with_name("redis_delay_proc.py")
ROOT = Path(__file__).resolve().parents[2]
COUNT = 30  # due 1.0 s .. 6.8 s after the start, every 0.2 s
POLL = 0.5


@pytest.fixture
def spawn(redis_url: str, redis_prefix: str) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(PROC), redis_url, redis_prefix, *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        started.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() in ("published", "ready"), f"process said {line!r}"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.timeout(60)
def test_delayed_events_survive_every_process_of_ours_dying(
    redis_url: str, redis_prefix: str, spawn: object
) -> None:
    start = time.time()
    publisher = spawn("publish", repr(start), str(COUNT))  # type: ignore[operator]
    _kill(publisher)  # nothing of ours runs now; the first events fall due meanwhile
    time.sleep(max(start + 2.0 - time.time(), 0))
    first = spawn("consume", "first")  # type: ignore[operator]
    time.sleep(max(start + 3.5 - time.time(), 0))
    _kill(first)
    second_started = time.time()
    spawn("consume", "second")  # type: ignore[operator]
    raw = redis.Redis.from_url(redis_url)
    deadline = time.time() + 20
    arrivals: dict[int, tuple[float, float]] = {}
    while time.time() < deadline:
        for line in raw.lrange(f"{redis_prefix}arrivals", 0, -1):
            n, due, at = line.decode().split()
            arrivals.setdefault(int(n), (float(due), float(at)))
        if len(arrivals) == COUNT:
            break
        time.sleep(0.1)
    raw.close()
    assert sorted(arrivals) == list(range(COUNT)), f"lost {set(range(COUNT)) - set(arrivals)}"
    early = {n: due - at for n, (due, at) in arrivals.items() if at < due - 0.02}
    assert not early, f"arrived early (seconds): {early}"
    # Due while the second consumer ran (give it a second to join): on time within the poll.
    running = {n: at - due for n, (due, at) in arrivals.items() if due > second_started + 1.0}
    assert running, "the test must have events due while a consumer runs"
    late = {n: lateness for n, lateness in running.items() if lateness > POLL + 0.5}
    assert not late, f"late by more than the poll interval (seconds): {late}"
    print(
        f"\n{COUNT} delayed events, publisher killed, first consumer killed: all delivered, "
        f"none early; lateness while running max {max(running.values()):.3f}s"
    )
