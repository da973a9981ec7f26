"""NATS consumers killed with SIGKILL: nothing is lost, duplicates are only what the dead one
held, and the server's delivery count carries the retry budget to the consumer that takes over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from dotmac.events import (
    ConsumerOptions,
    DLQEntry,
    Event,
    NatsConfig,
    create_nats_bus,
    run_consumer,
)
from dotmac.events.adapters.nats import NatsJetStreamBus
from dotmac.events.testing import wait_until
from tests.faults.nats_consumer_proc import ACK_WAIT

pytestmark = [pytest.mark.nats, pytest.mark.slow]

PROC = Path(__file__).with_name("nats_consumer_proc.py")
ROOT = Path(__file__).resolve().parents[2]
EVENTS = 5_000

Spawn = Callable[[str, str, str], "subprocess.Popen[bytes]"]


def fast_config(url: str, prefixes: tuple[str, str]) -> NatsConfig:
    return NatsConfig(
        servers=url,
        stream_prefix=prefixes[0],
        subject_prefix=prefixes[1],
        ack_wait=ACK_WAIT,
        fetch_wait=0.5,
        prefetch_count=16,
    )


def lines(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.fixture
async def buses() -> AsyncIterator[list[NatsJetStreamBus]]:
    """Buses a test creates; closed even when the test fails half-way."""
    created: list[NatsJetStreamBus] = []
    yield created
    for bus in created:
        await bus.close(timeout=2.0)


@pytest.fixture
def spawn(nats_url: str, nats_prefixes: tuple[str, str], tmp_path: Path) -> Iterator[Spawn]:
    """Start consumer processes; any left running are killed at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(topic: str, group: str, mode: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = [nats_url, *nats_prefixes, topic, group, mode, str(tmp_path)]
        proc = subprocess.Popen(
            [sys.executable, str(PROC), *args], stdout=subprocess.PIPE, cwd=ROOT, env=env
        )
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until subscribed (or the process died)
        assert line.strip() == b"ready", f"consumer process failed to start: {line!r}"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


async def test_sigkill_mid_handler_loses_nothing(
    nats_url: str,
    nats_prefixes: tuple[str, str],
    tmp_path: Path,
    spawn: Spawn,
    buses: list[NatsJetStreamBus],
) -> None:
    topic = "crash"
    bus = create_nats_bus(fast_config(nats_url, nats_prefixes))
    buses.append(bus)
    for start in range(0, EVENTS, 500):
        await bus.publish_many([Event(topic, n) for n in range(start, start + 500)])
    victim = spawn(topic, "workers", "work")

    deadline = time.monotonic() + 30
    while len(lines(tmp_path / "handled")) < 1_000 or len(lines(tmp_path / "started")) <= len(
        lines(tmp_path / "handled")
    ):
        assert time.monotonic() < deadline, "the first consumer made no progress"
        await asyncio.sleep(0.01)
    kill(victim)
    await asyncio.sleep(0.5)  # the server sees the connection close; acks in flight land
    held = (await bus.stats(topic, "workers")).pending  # what the server waits to hear about
    started_a = Counter(lines(tmp_path / "started"))
    handled_a = Counter(lines(tmp_path / "handled"))
    in_handler_at_kill = set(started_a) - set(handled_a)
    assert in_handler_at_kill, "the kill did not land mid-handler"
    assert held is not None and held >= len(in_handler_at_kill)

    handled_b: Counter[int] = Counter()
    redelivered_b: set[int] = set()

    async def finish(event: Event) -> None:
        handled_b[event.payload] += 1
        if event.delivery_count > 1:
            redelivered_b.add(event.payload)

    await run_consumer(
        bus, topic, finish, ConsumerOptions(max_retries=3), group="workers", concurrency=8
    )
    everything = set(range(EVENTS))
    await wait_until(
        lambda: set(handled_a) | set(handled_b) >= everything, 30 + ACK_WAIT, "all events"
    )
    await wait_until(lambda: len(redelivered_b) >= held, 10, "the dead one's messages")
    await asyncio.sleep(0.5)
    stats = await bus.stats(topic, "workers")

    total = handled_a + handled_b
    duplicates = {n for n, c in total.items() if c > 1}
    lost = everything - set(total)
    print(
        "\ncrash test (SIGKILL mid-handler, nats jetstream)\n"
        f"  events published        {EVENTS}\n"
        f"  handled by the victim   {sum(handled_a.values())}\n"
        f"  handled by the survivor {sum(handled_b.values())}\n"
        f"  held by victim at kill  {held} (in a handler: {len(in_handler_at_kill)})\n"
        f"  redelivered (count > 1) {len(redelivered_b)}\n"
        f"  handled twice           {len(duplicates)}\n"
        f"  lost                    {len(lost)}\n"
        f"  dead letters            {stats.dlq_depth}"
    )
    assert not lost
    assert in_handler_at_kill <= redelivered_b  # each came back, with its count raised
    assert len(redelivered_b) == held  # and only what the server saw the victim hold
    assert duplicates <= redelivered_b  # only what the victim held but had not acked
    assert max(total.values()) <= 2
    assert stats.pending == 0 and stats.lag == 0 and stats.dlq_depth == 0


async def test_retry_budget_survives_consumers_dying_between_attempts(
    nats_url: str,
    nats_prefixes: tuple[str, str],
    tmp_path: Path,
    spawn: Spawn,
    buses: list[NatsJetStreamBus],
) -> None:
    topic = "poison"
    bus = create_nats_bus(fast_config(nats_url, nats_prefixes))
    buses.append(bus)
    await bus.publish(Event(topic, {"always": "fails"}))
    for attempt in (1, 2, 3):  # each consumer makes one attempt and dies before retrying
        proc = spawn(topic, "g", "fail")
        deadline = time.monotonic() + 15 + ACK_WAIT
        while len(lines(tmp_path / "attempts")) < attempt:
            assert time.monotonic() < deadline, f"attempt {attempt} never happened"
            await asyncio.sleep(0.01)
        kill(proc)

    calls: list[int] = []
    dead: list[DLQEntry] = []

    async def fail(event: Event) -> None:
        calls.append(event.delivery_count)
        raise RuntimeError("still failing")

    async def on_dead(event: Event) -> None:
        dead.append(DLQEntry.from_event(event))

    await bus.subscribe(f"{topic}.DLQ", on_dead, group="dlq")
    await run_consumer(
        bus, topic, fail, ConsumerOptions(max_retries=3, backoff_base_ms=10), group="g"
    )
    await wait_until(lambda: len(dead) == 1, 15 + ACK_WAIT, "the dead letter")
    await asyncio.sleep(0.3)
    stats = await bus.stats(topic, "g")
    assert lines(tmp_path / "attempts") == [1, 2, 3]
    assert calls == [4]  # max_retries=3: the fourth attempt is the last, across four processes
    assert dead[0].attempts == 4 and dead[0].error_type == "RuntimeError"
    assert dead[0].original_event is not None
    assert dead[0].original_event.payload == {"always": "fails"}
    assert stats.pending == 0 and stats.dlq_depth == 1
