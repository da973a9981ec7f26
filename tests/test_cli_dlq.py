"""``dotmac-events dlq list|show|replay|purge``, run as a process against real brokers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dotmac.events import ConsumerOptions, Event, Reject, run_consumer
from dotmac.events.dlq import DeadLetters
from dotmac.events.urls import create_bus

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotmac.events", "dlq", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=ENV,
    )


async def _three_dead_letters(url: str, topic: str) -> list[str]:
    bus = create_bus(url)
    try:

        async def handler(event: Event) -> None:
            raise Reject(f"bad order {event.payload['n']}")

        await run_consumer(bus, topic, handler, ConsumerOptions(max_retries=0), group="billing")
        for n in range(3):
            await bus.publish(Event(topic, {"n": n}, key=f"k{n}"))
        view = DeadLetters(bus, f"{topic}.DLQ")
        held: list[str] = []

        async def count() -> None:
            held[:] = [e.id or "" for e in await view.list()]

        for _ in range(300):
            await count()
            if len(held) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(held) == 3
        return held
    finally:
        await bus.close()


async def test_list_show_replay_purge_on_redis(redis_url: str, redis_prefix: str) -> None:
    url = f"{redis_url}?key_prefix={redis_prefix}"
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    ids = await _three_dead_letters(url, topic)
    dlq = f"{topic}.DLQ"

    listed = _cli("list", dlq, "--bus", url)
    assert listed.returncode == 0, listed.stderr
    assert "3 dead letter(s)" in listed.stdout
    assert all(i in listed.stdout for i in ids) and "Reject: bad order 2" in listed.stdout
    assert listed.stdout.index(ids[0]) < listed.stdout.index(ids[2])  # newest first
    only = _cli("list", dlq, "--bus", url, "--error-type", "ValueError")
    assert "0 dead letter(s)" in only.stdout

    shown = _cli("show", dlq, ids[1], "--bus", url)
    assert shown.returncode == 0, shown.stderr
    assert "dotmac.events.errors.Reject: bad order 1" in shown.stdout
    assert '"n": 1' in shown.stdout and topic in shown.stdout

    replayed = _cli("replay", dlq, ids[2], "--bus", url)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1, skipped 0" in replayed.stdout
    again = _cli("replay", dlq, "--all", "--bus", url, "--rate", "50")
    assert "replayed 2, skipped 1" in again.stdout, again.stdout + again.stderr

    purged = _cli("purge", dlq, ids[0], "--bus", url)
    assert purged.returncode == 0 and "deleted 1" in purged.stdout, purged.stderr
    everything = _cli("purge", dlq, "--all", "--yes", "--bus", url)
    assert "deleted" in everything.stdout, everything.stderr
    assert "0 dead letter(s)" in _cli("list", dlq, "--bus", url).stdout


async def test_list_and_refused_single_purge_on_kafka(kafka_bootstrap: str) -> None:
    url = f"kafka://{kafka_bootstrap}"
    topic = f"test.cli-dlq.{uuid.uuid4().hex[:8]}"
    ids = await _three_dead_letters(url, topic)
    listed = _cli("list", f"{topic}.DLQ", "--bus", url)
    assert listed.returncode == 0, listed.stderr
    assert "3 dead letter(s)" in listed.stdout and ids[0] in listed.stdout
    refused = _cli("purge", f"{topic}.DLQ", ids[0], "--bus", url)
    assert refused.returncode == 1
    assert "kafka cannot delete single records" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "x.DLQ"], "give --bus URL"),
        (["replay", "x.DLQ", "--bus", "memory://"], "give ENTRY_IDs or --all"),
        (["replay", "x.DLQ", "1", "--all", "--bus", "memory://"], "give ENTRY_IDs or --all"),
        (["purge", "x.DLQ", "--bus", "memory://"], "give ENTRY_IDs or --all"),
        (["list", "x.DLQ", "--bus", "memory://", "--limit", "0"], "0 is not in the range"),
        (["list", "x.DLQ", "--bus", "memory://", "--since", "yesterday"], "yesterday"),
        (["replay", "x.DLQ", "--all", "--rate", "0", "--bus", "memory://"], "--rate"),
        (["show", "x.DLQ", "7", "--bus", "memory://"], "no dead letter '7'"),
        (["list", "x.DLQ", "--bus", "nosuch://host"], "nosuch"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], message: str) -> None:
    done = _cli(*args)
    assert done.returncode in (1, 2)
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
