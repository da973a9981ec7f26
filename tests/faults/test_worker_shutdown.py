"""``dotmac-events worker`` as a real process on Redis, Kafka, NATS and Redis Cluster:
SIGTERM drains and exits 0, a second worker of the group handles the rest (nothing lost,
nothing unhandled acked), a second signal or the drain timeout passing exits non-zero with the
unfinished events left unacked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dotmac.events import Event
from dotmac.events.urls import create_bus

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.worker_app:router"
EVENTS = 2_000
DRAIN = 10.0


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader thread take the last lines
                break
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} from the worker; stderr:\n{''.join(self.lines)}")

    def exit_code(self, timeout: float) -> tuple[int, float]:
        started = time.monotonic()
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started


@pytest.fixture
def spawn() -> Iterator[object]:
    started: list[Worker] = []

    def start(url: str, env: dict[str, str], *extra: str) -> Worker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dotmac.events", "worker", APP, "--bus", url, *extra],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )
        worker = Worker(proc)
        assert proc.stderr is not None
        stream = proc.stderr
        worker.reader = threading.Thread(
            target=lambda: worker.lines.extend(iter(stream.readline, "")), daemon=True
        )
        worker.reader.start()
        started.append(worker)
        worker.wait_for_line("worker ready", 30)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait()
        if worker.reader is not None:
            worker.reader.join(5)
        if worker.proc.stderr is not None:
            worker.proc.stderr.close()


def _handled(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _publish(url: str, topic: str, count: int) -> None:
    async with create_bus(url) as bus:
        for start in range(0, count, 500):
            await bus.publish_many(
                [
                    Event(topic, {"n": n}, key=f"k{n % 31}")
                    for n in range(start, min(start + 500, count))
                ]
            )


async def _outstanding(url: str, topic: str, group: str) -> int:
    """Events the group has not acked: not yet delivered plus delivered-but-unacked."""
    return (await _acked(url, topic, group))[1]


async def _acked(url: str, topic: str, group: str) -> tuple[int, int]:
    """(acked, outstanding) for the group, both from the broker's own numbers: on Kafka they
    are offsets, and this broker's offsets need not count records one for one."""
    async with create_bus(url) as bus:
        stats = await bus.stats(topic, group)
    outstanding = (stats.lag or 0) + (stats.pending or 0)
    return (stats.length or 0) - outstanding, outstanding


@pytest.fixture(params=["redis", "kafka", "nats", "redis-cluster"])
def bus_url(request: pytest.FixtureRequest) -> str:
    tag = uuid.uuid4().hex[:8]
    if request.param == "redis":
        request.applymarker(pytest.mark.redis)
        base = request.getfixturevalue("redis_url")
        return f"{base}?key_prefix=w-{tag}:&claim_interval=0.5&block_ms=200"
    if request.param == "redis-cluster":
        request.applymarker(pytest.mark.redis_cluster)
        base = request.getfixturevalue("redis_cluster_url")
        return f"{base}?key_prefix=w-{tag}:&claim_interval=0.5&partitions=4"
    if request.param == "nats":
        # A message a worker took and did not ack goes to another after ack_wait; live
        # workers report progress (+WPI) on the slow handlers they run, so those stay theirs.
        request.applymarker(pytest.mark.nats)
        base = request.getfixturevalue("nats_url")
        return f"{base}?stream_prefix=W{tag}&subject_prefix=w{tag}&ack_wait=2&fetch_wait=0.5"
    request.applymarker(pytest.mark.kafka)
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return f"kafka://{bootstrap}?client_id=worker-test&num_partitions=3&session_timeout_ms=6000&heartbeat_interval_ms=1000"


def _env(tmp_path: Path, name: str, topic: str, **extra: str) -> dict[str, str]:
    return {
        "WORKER_TOPIC": topic,
        "WORKER_GROUP": "workers",
        "WORKER_RECORD": str(tmp_path / f"{name}.txt"),
        **extra,
    }


@pytest.mark.timeout(90)
async def test_sigterm_drains_and_a_second_worker_handles_the_rest(
    bus_url: str, spawn: object, tmp_path: Path
) -> None:
    topic = f"jobs-{uuid.uuid4().hex[:8]}"
    await _publish(bus_url, topic, EVENTS)
    first = spawn(bus_url, _env(tmp_path, "first", topic), "--drain-timeout", str(DRAIN))  # type: ignore[operator]
    _wait(lambda: len(_handled(tmp_path / "first.txt")) >= 400, 30, "400 events handled")
    first.proc.send_signal(signal.SIGTERM)
    code, took = first.exit_code(DRAIN + 20)
    assert code == 0, "".join(first.lines)
    assert took < DRAIN, f"took {took:.1f}s to exit"
    assert any("drained and closed" in line for line in first.lines)
    by_first = set(_handled(tmp_path / "first.txt"))
    assert 0 < len(by_first) < EVENTS, "SIGTERM must land mid-stream"
    # Nothing the first worker did not handle was acked: the group still owes all of them.
    acked, outstanding = await _acked(bus_url, topic, "workers")
    assert 0 <= acked <= len(by_first), (acked, outstanding, len(by_first))

    second = spawn(bus_url, _env(tmp_path, "second", topic), "--drain-timeout", str(DRAIN))  # type: ignore[operator]
    _wait(
        lambda: by_first | set(_handled(tmp_path / "second.txt")) >= set(range(EVENTS)),
        40,
        "every event handled",
    )
    second.proc.send_signal(signal.SIGTERM)
    code, _ = second.exit_code(DRAIN + 20)
    assert code == 0, "".join(second.lines)

    first_list, second_list = _handled(tmp_path / "first.txt"), _handled(tmp_path / "second.txt")
    counts = Counter(first_list + second_list)
    lost = EVENTS - len(set(counts) & set(range(EVENTS)))
    duplicates = sum(c - 1 for c in counts.values())
    missed_by_first = set(range(EVENTS)) - by_first
    assert missed_by_first <= set(second_list)  # unhandled by the first => handled by the second
    assert lost == 0
    assert await _outstanding(bus_url, topic, "workers") == 0
    print(
        f"\n{bus_url.split(':')[0]}: published {EVENTS}, first worker {len(first_list)}, "
        f"(acked {acked}), second {len(second_list)}, handled {len(counts)}, "
        f"duplicates {duplicates} (within first {len(first_list) - len(set(first_list))}, "
        f"within second {len(second_list) - len(set(second_list))}), lost {lost}, "
        f"first exit {took:.2f}s after SIGTERM"
    )


def _started(path: Path) -> list[int]:
    """Events whose handler began (``worker_app`` writes ``started <n>`` first thing)."""
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines() if line.strip()]


def _slow_env(tmp_path: Path, topic: str) -> dict[str, str]:
    """Handlers that run far longer than any test waits: none finishes in the first worker."""
    return _env(tmp_path, "w", topic, WORKER_DELAY="60", WORKER_STARTED=str(tmp_path / "s.txt"))


def _claiming(url: str) -> str:
    """The URL for a second worker: on Redis it takes over the dead worker's pending events
    after one idle second (the default waits 30); Kafka hands partitions over on its own."""
    return f"{url}&claim_idle_ms=1000" if url.startswith("redis") else url


async def _assert_acked_nothing(url: str, topic: str) -> None:
    """The broker's own numbers (on Kafka the group's committed offsets, read by a fresh
    client) show the group still owes everything it was given."""
    acked, outstanding = await _acked(url, topic, "workers")
    assert acked == 0 and outstanding > 0, (acked, outstanding)
    if url.startswith("redis"):  # stream entries count one for one
        assert outstanding == 20


async def _second_worker_handles_all(
    url: str, spawn: object, tmp_path: Path, topic: str, count: int
) -> None:
    second = spawn(_claiming(url), _env(tmp_path, "second", topic), "--drain-timeout", "5")  # type: ignore[operator]
    _wait(
        lambda: set(_handled(tmp_path / "second.txt")) >= set(range(count)),
        60,
        "the second worker to handle every event",
    )
    second.proc.send_signal(signal.SIGTERM)
    code, _ = second.exit_code(30)
    assert code == 0, "".join(second.lines)
    assert await _outstanding(url, topic, "workers") == 0


@pytest.mark.timeout(120)
async def test_second_signal_forces_a_non_zero_exit_and_acks_nothing(
    bus_url: str, spawn: object, tmp_path: Path
) -> None:
    topic = f"slow-{uuid.uuid4().hex[:8]}"
    await _publish(bus_url, topic, 20)
    worker = spawn(bus_url, _slow_env(tmp_path, topic), "--drain-timeout", "20")  # type: ignore[operator]
    _wait(lambda: len(_started(tmp_path / "s.txt")) >= 4, 30, "4 handlers running")
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for_line("draining", 10)
    worker.proc.send_signal(signal.SIGTERM)
    code, took = worker.exit_code(10)
    assert code == 4, "".join(worker.lines)
    assert took < 5
    assert any("second signal" in line for line in worker.lines)
    assert _handled(tmp_path / "w.txt") == []
    await _assert_acked_nothing(bus_url, topic)
    await _second_worker_handles_all(bus_url, spawn, tmp_path, topic, 20)


@pytest.mark.timeout(120)
async def test_drain_timeout_exits_non_zero_and_leaves_running_events_unacked(
    bus_url: str, spawn: object, tmp_path: Path
) -> None:
    """Also --concurrency: it overrides the handler's own 4, so exactly 6 calls run."""
    topic = f"slow-{uuid.uuid4().hex[:8]}"
    await _publish(bus_url, topic, 20)
    worker = spawn(  # type: ignore[operator]
        bus_url, _slow_env(tmp_path, topic), "--drain-timeout", "1", "--concurrency", "6"
    )
    assert any("concurrency 6" in line for line in worker.lines), "".join(worker.lines)
    _wait(lambda: len(_started(tmp_path / "s.txt")) >= 6, 30, "6 handlers running")
    await asyncio.sleep(0.5)  # a seventh call would start now if the override were not applied
    assert len(_started(tmp_path / "s.txt")) == 6
    worker.proc.send_signal(signal.SIGINT)
    code, took = worker.exit_code(20)
    assert code == 3, "".join(worker.lines)
    assert took < 1 + 5
    assert any("drain timeout" in line for line in worker.lines)
    assert _handled(tmp_path / "w.txt") == []
    await _assert_acked_nothing(bus_url, topic)
    await _second_worker_handles_all(bus_url, spawn, tmp_path, topic, 20)
