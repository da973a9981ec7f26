"""Consumers killed with SIGKILL: nothing is lost, duplicates are only what the dead one held,
and retry budgets carry over to the consumer that takes over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import (
    ConsumerOptions,
    DLQEntry,
    Event,
    RedisConfig,
    create_redis_bus,
    run_consumer,
)
from dotmac.events.adapters.redis import RedisStreamsBus
from dotmac.events.codec import JsonCodec
from dotmac.events.testing import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PROC = Path(__file__).with_name("redis_consumer_proc.py")
ROOT = Path(__file__).resolve().parents[2]
EVENTS = 5_000


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def buses() -> AsyncIterator[list[RedisStreamsBus]]:
    """Buses a test creates; closed even when the test fails half-way."""
    created: list[RedisStreamsBus] = []
    yield created
    for bus in created:
        await bus.close(timeout=2.0)


@pytest.fixture
def spawn(redis_url: str, redis_prefix: str) -> Iterator[object]:
    """Start consumer processes; any left running are killed at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(topic: str, group: str, mode: str, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, str(PROC), redis_url, redis_prefix, topic, group, mode, name],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
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


def fast_config(url: str, prefix: str) -> RedisConfig:
    return RedisConfig(
        url=url,
        key_prefix=prefix,
        block_ms=100,
        claim_idle_ms=400,
        claim_interval=0.1,
        prefetch_count=16,
    )


async def test_sigkill_mid_handler_loses_nothing(
    redis_url: str,
    redis_prefix: str,
    raw: redis_asyncio.Redis,
    spawn: object,
    buses: list[RedisStreamsBus],
) -> None:
    topic, stream = "crash", f"{redis_prefix}crash"
    bus = create_redis_bus(fast_config(redis_url, redis_prefix))
    buses.append(bus)
    for start in range(0, EVENTS, 500):
        await bus.publish_many([Event(topic, n) for n in range(start, start + 500)])
    victim = spawn(topic, "workers", "work", "victim")  # type: ignore[operator]

    deadline = time.monotonic() + 30
    while await raw.llen(f"{redis_prefix}handled") < 1_000 or await raw.llen(
        f"{redis_prefix}started"
    ) <= await raw.llen(f"{redis_prefix}handled"):
        assert time.monotonic() < deadline, "the first consumer made no progress"
        await asyncio.sleep(0.01)
    kill(victim)

    # What the dead consumer held, as Redis sees it: exactly what may come back.
    held = await raw.xpending_range(
        stream, "workers", min="-", max="+", count=1000, consumername="victim"
    )
    codec = JsonCodec()
    held_payloads = set()
    for info in held:
        _, fields = (await raw.xrange(stream, min=info["message_id"], max=info["message_id"]))[0]
        held_payloads.add(codec.decode(fields[b"data"]).payload)
    started_a = Counter(int(x) for x in await raw.lrange(f"{redis_prefix}started", 0, -1))
    handled_a = Counter(int(x) for x in await raw.lrange(f"{redis_prefix}handled", 0, -1))
    in_handler_at_kill = set(started_a) - set(handled_a)
    assert in_handler_at_kill, "the kill did not land mid-handler"
    assert in_handler_at_kill <= held_payloads

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
    await wait_until(lambda: set(handled_a) | set(handled_b) >= everything, 30, "all events")
    await wait_until(lambda: redelivered_b >= held_payloads, 10, "the dead one's entries")
    await bus.close()
    probe = create_redis_bus(fast_config(redis_url, redis_prefix))
    stats = await probe.stats(topic, "workers")
    await probe.close()

    total = handled_a + handled_b
    duplicates = {n for n, c in total.items() if c > 1}
    lost = everything - set(total)
    print(
        "\ncrash test (SIGKILL mid-handler, redis streams)\n"
        f"  events published        {EVENTS}\n"
        f"  handled by the victim   {sum(handled_a.values())}\n"
        f"  handled by the survivor {sum(handled_b.values())}\n"
        f"  held by victim at kill  {len(held_payloads)}"
        f" (in a handler: {len(in_handler_at_kill)})\n"
        f"  redelivered (count > 1) {len(redelivered_b)}\n"
        f"  handled twice           {len(duplicates)}\n"
        f"  lost                    {len(lost)}\n"
        f"  dead letters            {stats.dlq_depth}"
    )
    assert not lost
    assert duplicates <= held_payloads  # only what the victim held but had not acked
    assert redelivered_b == held_payloads  # each of those came back, with its count raised
    assert max(total.values()) <= 2
    major = int((await raw.info("server"))["redis_version"].split(".")[0])
    assert stats.pending == 0 and stats.dlq_depth == 0
    assert stats.lag == (0 if major >= 7 else None)  # XINFO GROUPS reports lag since 7.0


async def test_retry_budget_survives_consumers_dying_between_attempts(
    redis_url: str,
    redis_prefix: str,
    raw: redis_asyncio.Redis,
    spawn: object,
    buses: list[RedisStreamsBus],
) -> None:
    topic = "poison"
    bus = create_redis_bus(fast_config(redis_url, redis_prefix))
    buses.append(bus)
    await bus.publish(Event(topic, {"always": "fails"}))
    attempts_key = f"{redis_prefix}attempts"
    for attempt in (1, 2, 3):  # each consumer makes one attempt and dies before retrying
        proc = spawn(topic, "g", "fail", f"mortal-{attempt}")  # type: ignore[operator]
        deadline = time.monotonic() + 15
        while await raw.llen(attempts_key) < attempt:
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
    await wait_until(lambda: len(dead) == 1, 15, "the dead letter")
    await bus.close()
    probe = create_redis_bus(fast_config(redis_url, redis_prefix))
    stats = await probe.stats(topic, "g")
    await probe.close()
    attempts = [int(x) for x in await raw.lrange(attempts_key, 0, -1)]
    assert attempts == [1, 2, 3]
    assert calls == [4]  # max_retries=3: the fourth attempt is the last, across four processes
    assert dead[0].attempts == 4 and dead[0].error_type == "RuntimeError"
    assert dead[0].original_event is not None
    assert dead[0].original_event.payload == {"always": "fails"}
    assert stats.pending == 0 and stats.dlq_depth == 1
