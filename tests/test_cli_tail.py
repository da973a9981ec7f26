"""``dotmac-events tail`` as a real process on real brokers: from the beginning with --limit,
following from now until SIGTERM (exit 0), foreign records shown raw, bad arguments."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from redis.asyncio import Redis

from dotmac.events import Event, create_bus

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotmac.events", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


def _publish(url: str, topic: str, payloads: list[dict[str, int]]) -> None:
    async def send() -> None:
        async with create_bus(url) as bus:
            for payload in payloads:
                await bus.publish(Event(topic, payload, key="k"))

    asyncio.run(send())


def _payloads(stdout: str) -> list[object]:
    """The JSON payload at the end of each event line."""
    return [orjson.loads(line[line.index("{") :]) for line in stdout.splitlines() if "{" in line]


class _Tail:
    """``tail`` running as a process; its stdout lines arrive in a queue as they are printed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dotmac.events", "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=ENV,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line)

    def first_line_while(self, publish: Callable[[int], None], timeout: float = 30) -> str:
        """Publish (n = 0, 1, ...) until tail prints a line: it takes the end of the topic
        when its read starts, which the test cannot see from outside."""
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            publish(n)
            n += 1
            try:
                return self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
        raise AssertionError("tail printed nothing while events were published")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        return self.proc.returncode, err


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_tail_from_beginning_on_redis_shows_events_and_foreign_entries(redis_url: str) -> None:
    prefix = f"tail-{uuid.uuid4().hex[:8]}:"
    url = f"{redis_url}?key_prefix={prefix}"
    _publish(url, "orders", [{"n": 1}, {"n": 2}])

    async def foreign() -> None:
        client = Redis.from_url(redis_url)
        await client.xadd(f"{prefix}orders", {"legacy": b"<order id='7'/>"})
        await client.aclose()

    asyncio.run(foreign())
    _publish(url, "orders", [{"n": 3}])
    done = _cli("tail", "orders", "--from-beginning", "--limit", "4", "--bus", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    assert _payloads("\n".join(lines[:2] + lines[3:])) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert "unreadable: entry is not an event" in lines[2]
    assert "<order id='7'/>" in lines[2]
    assert "key=k" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_tail_follows_redis_from_now_until_sigterm(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=tail-{uuid.uuid4().hex[:8]}:&block_ms=200"
    _publish(url, "jobs", [{"n": -1}])  # before tail: never shown
    tail = _Tail("jobs", "--bus", url)
    try:
        line = tail.first_line_while(lambda n: _publish(url, "jobs", [{"n": n}]))
    finally:
        code, err = tail.stop()
    assert _payloads(line)[0] != {"n": -1}
    assert code == 0, err
    assert "Traceback" not in err
    assert "tailing jobs" in err


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_tail_on_kafka_from_beginning_then_following(kafka_bootstrap: str) -> None:
    url = f"kafka://{kafka_bootstrap}?num_partitions=1&linger_ms=0&fetch_max_wait_ms=50"
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    _publish(url, topic, [{"n": 1}])
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"\xff not ours", key=b"legacy")
    assert producer.flush(10) == 0
    _publish(url, topic, [{"n": 2}])
    done = _cli("tail", topic, "--from-beginning", "--limit", "3", "--bus", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    assert [line.split()[1] for line in lines] == ["0:0", "0:1", "0:2"]
    assert _payloads(lines[0] + "\n" + lines[2]) == [{"n": 1}, {"n": 2}]
    assert "unreadable: not JSON" in lines[1] and "\\xff not ours" in lines[1]

    tail = _Tail(topic, "--bus", url)
    try:
        line = tail.first_line_while(lambda n: _publish(url, topic, [{"n": 100 + n}]))
    finally:
        code, err = tail.stop()
    assert _payloads(line)[0] in [{"n": 100 + n} for n in range(60)]
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_tail_on_memory_stops_cleanly_on_sigterm() -> None:
    tail = _Tail("anything", "--bus", "memory://")
    assert tail.proc.stderr is not None
    started = tail.proc.stderr.readline()  # printed once the bus is open
    assert "tailing anything" in started
    code, err = tail.stop()
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("tail", "t", "--bus", "memory://", "--limit", "0"), "0 is not in the range x>=1"),
        (("tail", "t", "--bus", "bogus://host"), "unknown scheme"),
        (("tail", "t", "--bus", "redis://127.0.0.1:1/0?connection_timeout=1"), "redis"),
        (("tail", "--bus", "memory://"), "Missing argument 'TOPIC'"),
    ],
)
def test_tail_bad_arguments_give_one_line(args: tuple[str, ...], expected: str) -> None:
    env_without_url = {k: v for k, v in ENV.items() if k != "DOTMAC_EVENTS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "dotmac.events", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env_without_url,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("dotmac-events: error:"), done.stderr
    assert expected in lines[-1], done.stderr
