"""A record whose handler SIGKILLs its consumer is dead-lettered once its retry budget is spent:
the delivery count carries over from one process to the next through the attempts topic, and
records handled before it are not charged for its crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from dotmac.events import DLQEntry, Event
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.dlq import DeadLetters
from tests.faults.kafka_poison_consumer import MAX_RETRIES
from tests.support.kafka_attempts import stored_counts
from tests.support.kafka_helpers import kafka_test_config, unique_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
HEALTHY = 5
POISON = {"poison": True}


def _attempts(path: Path) -> list[int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(line.split()[1]) for line in lines if line.startswith("attempt ")]


async def _spawn_victim(
    bootstrap: str, topic: str, group: str, out: Path
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.kafka_poison_consumer",
        bootstrap,
        topic,
        group,
        str(out),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_retry_budget_survives_sigkill_in_the_handler(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique_topic("poison")
    group = "poison-workers"
    out = tmp_path / "attempts.txt"
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap))
    dead_letters = DeadLetters(bus, f"{topic}.DLQ")
    found: list[DLQEntry] = []
    victims: list[asyncio.subprocess.Process] = []
    loop = asyncio.get_running_loop()
    try:
        await bus.publish(Event(topic, POISON, key="p"))
        for _ in range(MAX_RETRIES + 3):  # a process per attempt, then one that dead-letters
            victim = await _spawn_victim(kafka_bootstrap, topic, group, out)
            victims.append(victim)
            before = len(_attempts(out))
            deadline = loop.time() + 60
            while victim.returncode is None and len(_attempts(out)) == before:
                found[:] = await dead_letters.list()
                if found:
                    break
                assert loop.time() < deadline, "neither an attempt nor a dead letter"
                await asyncio.sleep(0.2)
            if found:
                break
            await asyncio.wait_for(victim.wait(), 10)  # it made its attempt: it is dying
        lag = None
        for _ in range(50):  # the dead-lettered record is committed by the last process
            lag = (await bus.stats(topic, group)).lag
            if lag == 0:
                break
            await asyncio.sleep(0.2)
    finally:
        for victim in victims:
            if victim.returncode is None:
                victim.kill()
                await victim.wait()
        await bus.close(timeout=5.0)

    attempts = _attempts(out)
    counts = await stored_counts(kafka_bootstrap, f"{group}.{topic}", topic)
    print(
        f"\nkafka retry budget: attempts {attempts} in {len(victims)} processes, "
        f"stored counts {counts}, dead letter: "
        + (f"attempts {found[0].attempts}, {found[0].error_type}" if found else "none")
    )
    assert attempts == [1, 2, 3]  # max_retries=2: three attempts, one per process
    assert [v.returncode for v in victims[:3]] == [-signal.SIGKILL] * 3
    assert len(victims) == 4  # the fourth dead-lettered it without calling the handler
    assert len(found) == 1
    assert found[0].attempts == MAX_RETRIES + 1
    assert found[0].error_type == "RetriesExhausted"
    assert found[0].original_event is not None
    assert found[0].original_event.payload == {"poison": True}
    assert lag == 0
    # each process stored the count before it handed the record out; the fourth stored 4
    assert [deliveries for _, deliveries in counts] == [{0: n} for n in (1, 2, 3, 4)]


def _handled(path: Path) -> list[tuple[int, int]]:
    """(payload n, delivery count) of each healthy record handled, in order."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        (int(n), int(c)) for _, n, c in (ln.split() for ln in lines if ln.startswith("handled "))
    ]


async def test_records_before_a_crashing_one_are_handled_not_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Five healthy records then a poison one on one partition: each process handles the
    healthy ones and dies on the poison before it commits them. The healthy records must not
    pay for those crashes (before: the first of them, at the committed position, counted one
    delivery per crash and was dead-lettered unhandled by the fourth process, and by every
    one after it, while the poison record's count never grew), and the poison record must be
    dead-lettered once its budget is spent."""
    topic = unique_topic("poison-behind")
    group = "poison-behind-workers"
    out = tmp_path / "attempts.txt"
    bus = create_kafka_bus(kafka_test_config(kafka_bootstrap))
    dead_letters = DeadLetters(bus, f"{topic}.DLQ")
    found: list[DLQEntry] = []
    victims: list[asyncio.subprocess.Process] = []
    loop = asyncio.get_running_loop()

    def poison_found() -> bool:
        return any(e.original_event and e.original_event.payload == POISON for e in found)

    try:
        await bus.publish_many(
            [Event(topic, {"n": n}, key="p") for n in range(HEALTHY)]
            + [Event(topic, POISON, key="p")]
        )
        for _ in range(MAX_RETRIES + 6):  # enough for the budget, bounded if it never runs out
            victim = await _spawn_victim(kafka_bootstrap, topic, group, out)
            victims.append(victim)
            deadline = loop.time() + 60
            while victim.returncode is None:
                found[:] = await dead_letters.list()
                if poison_found():
                    break
                assert loop.time() < deadline, "the process neither died nor dead-lettered"
                await asyncio.sleep(0.2)
            if poison_found():
                break
        lag = None
        for _ in range(50):
            lag = (await bus.stats(topic, group)).lag
            if lag == 0:
                break
            await asyncio.sleep(0.2)
        found[:] = await dead_letters.list()
    finally:
        for victim in victims:
            if victim.returncode is None:
                victim.kill()
                await victim.wait()
        await bus.close(timeout=5.0)

    attempts = _attempts(out)
    handled = _handled(out)
    counts = await stored_counts(kafka_bootstrap, f"{group}.{topic}", topic)
    letters = [
        (e.original_event and e.original_event.payload, e.attempts, e.error_type) for e in found
    ]
    print(
        f"\nrecords before a crashing one: poison attempts {attempts} in {len(victims)} "
        f"processes; healthy handled (n, count) {handled}; dead letters "
        f"{letters}; "
        f"stored counts {counts}"
    )
    dead_healthy = [
        e for e in found if not (e.original_event and e.original_event.payload == POISON)
    ]
    assert dead_healthy == []  # a record whose handler succeeds is never dead-lettered
    assert {n for n, _ in handled} == set(range(HEALTHY))
    assert max(c for _, c in handled) <= 2  # one delivery more, at most, for the crash it saw
    assert len(found) == 1
    assert found[0].attempts == MAX_RETRIES + 1
    assert found[0].error_type == "RetriesExhausted"
    # The first process hands the poison out mid-assignment, uncounted (see the README), and
    # every process after it counts it before its handler runs: 1, 1, 2, 3, then the dead letter.
    assert attempts == [1, 1, 2, 3]
    assert len(victims) == MAX_RETRIES + 3
    assert [v.returncode for v in victims[:-1]] == [-signal.SIGKILL] * (MAX_RETRIES + 2)
    assert lag == 0
