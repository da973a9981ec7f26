"""Redis-specific behaviour against a real server: wire format, foreign entries, trimming of
pending entries, idle consumer cleanup, restart pickup of our own pending entries, stats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import (
    ConsumerOptions,
    DLQEntry,
    Event,
    RedisConfig,
    RedisStreamsBus,
    create_dlq_consumer,
    create_redis_bus,
    run_consumer,
)
from dotmac.events.observability import NoopObserver
from dotmac.events.testing import wait_until
from tests.support.redis_server import redis_cli

pytestmark = pytest.mark.redis


def fast_config(url: str, prefix: str, **overrides: Any) -> RedisConfig:
    options: dict[str, Any] = {
        "url": url,
        "key_prefix": prefix,
        "block_ms": 100,
        "claim_idle_ms": 400,
        "claim_interval": 0.1,
    }
    options.update(overrides)
    return RedisConfig(**options)


class ErrorRecorder(NoopObserver):
    def __init__(self) -> None:
        self.errors: list[tuple[str, str, BaseException]] = []

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        self.errors.append((topic, where, error))


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_entries_are_readable_with_redis_cli(redis_url: str, redis_prefix: str) -> None:
    bus = create_redis_bus(fast_config(redis_url, redis_prefix))
    event = Event(
        "orders",
        {"total": 12.5, "name": "Zoë"},
        key="cust-7",
        tenant_id="acme",
        headers={"trace": "abc"},
    )
    await bus.publish(event)
    await bus.close()
    out = redis_cli(redis_url, "--no-raw", "XRANGE", f"{redis_prefix}orders", "-", "+")
    lines = redis_cli(redis_url, "XRANGE", f"{redis_prefix}orders", "-", "+").splitlines()
    assert '"data"' in out and '"key"' in out
    fields = dict(zip(lines[1::2], lines[2::2], strict=False))
    envelope = json.loads(fields["data"])
    assert envelope["id"] == str(event.id)
    assert envelope["payload"] == {"total": 12.5, "name": "Zoë"}
    assert envelope["key"] == "cust-7" and fields["key"] == "cust-7"
    assert envelope["tenant_id"] == "acme" and envelope["headers"] == {"trace": "abc"}


async def test_foreign_entry_goes_to_dlq_and_consumer_continues(
    redis_url: str, redis_prefix: str
) -> None:
    bus = create_redis_bus(fast_config(redis_url, redis_prefix))
    good: list[Any] = []
    dead: list[DLQEntry] = []

    async def handler(event: Event) -> None:
        good.append(event.payload)

    async def on_dead_entry(entry: DLQEntry) -> None:  # foreign bytes are not events
        dead.append(entry)

    await run_consumer(bus, "mixed", handler, ConsumerOptions(max_retries=1), group="g")
    await create_dlq_consumer(bus, "mixed.DLQ", on_dead_entry, group="dlq")
    await bus.publish(Event("mixed", 1))
    stream = f"{redis_prefix}mixed"
    redis_cli(redis_url, "XADD", stream, "*", "order", "42", "status", "paid")
    redis_cli(redis_url, "XADD", stream, "*", "data", "not json at all")
    await bus.publish(Event("mixed", 2))
    await wait_until(lambda: len(good) == 2 and len(dead) == 2, 10, "2 good, 2 dead letters")
    assert good == [1, 2]
    assert {d.error_type for d in dead} == {"DecodeError"}
    assert [d.attempts for d in dead] == [1, 1]
    foreign = json.loads(dead[0].original_data)
    assert foreign == {"order": "42", "status": "paid"}
    assert dead[1].original_data == b"not json at all"
    await bus.close()
    probe = create_redis_bus(fast_config(redis_url, redis_prefix))
    stats = await probe.stats("mixed", "g")
    await probe.close()
    assert stats.pending == 0 and stats.dlq_depth == 2 and stats.length == 4


async def test_pending_entry_trimmed_from_a_dead_consumer_is_reported(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    stream = f"{redis_prefix}trim"
    observer = ErrorRecorder()
    bus = create_redis_bus(fast_config(redis_url, redis_prefix), observer=observer)
    await bus.publish(Event("trim", "lost"))
    # A consumer that read it and died without acking.
    await raw.xgroup_create(stream, "g", id="0")
    await raw.xreadgroup("g", "dead-one", {stream: ">"}, count=1)
    await raw.xtrim(stream, maxlen=0, approximate=False)
    handled: list[Any] = []

    async def handler(event: Event) -> None:
        handled.append(event.payload)

    await bus.subscribe("trim", handler, group="g")
    await wait_until(lambda: bus.lost_to_trimming == 1, 5, "trimmed entry reported")
    assert [where for _, where, _ in observer.errors] == ["trimmed"]
    assert "trimmed" in str(observer.errors[0][2]) and stream in str(observer.errors[0][2])
    assert (await raw.xpending(stream, "g"))["pending"] == 0  # acked, no longer haunting
    assert handled == []
    assert (await bus.health()).details["lost_to_trimming"] == 1
    await bus.close()


async def test_entry_trimmed_while_waiting_for_retry_is_reported(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    observer = ErrorRecorder()
    bus = create_redis_bus(fast_config(redis_url, redis_prefix), observer=observer)
    calls: list[int] = []

    async def failing(event: Event) -> None:
        calls.append(event.delivery_count)
        if len(calls) == 1:
            await raw.xtrim(f"{redis_prefix}retry-trim", maxlen=0, approximate=False)
        raise RuntimeError("fails")

    options = ConsumerOptions(max_retries=5, backoff_base_ms=300, jitter=False)
    await run_consumer(bus, "retry-trim", failing, options, group="g")
    await bus.publish(Event("retry-trim", "x"))
    await wait_until(lambda: bus.lost_to_trimming == 1, 5, "trimmed entry reported")
    await asyncio.sleep(0.5)
    assert calls == [1]
    assert [where for _, where, _ in observer.errors] == ["trimmed"]
    assert (await raw.xpending(f"{redis_prefix}retry-trim", "g"))["pending"] == 0
    await bus.close()


async def test_idle_consumers_without_pending_are_removed(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    stream = f"{redis_prefix}idle"
    await raw.xadd(stream, {"data": b"x"})
    await raw.xgroup_create(stream, "g", id="0")
    await raw.xgroup_createconsumer(stream, "g", "idle-empty")
    await raw.xreadgroup("g", "idle-holding", {stream: ">"}, count=1)  # holds one entry
    await asyncio.sleep(0.3)
    # Claims are off (long idle), so the holding consumer keeps its entry during the test.
    config = fast_config(
        redis_url, redis_prefix, claim_idle_ms=60_000, claim_interval=0.1, idle_consumer_ms=200
    )
    bus = create_redis_bus(config)
    await bus.subscribe("idle", _noop, group="g")

    async def names() -> dict[str, int]:
        infos = await raw.xinfo_consumers(stream, "g")
        return {i["name"].decode(): i["pending"] for i in infos}

    for _ in range(100):
        if "idle-empty" not in await names():
            break
        await asyncio.sleep(0.05)
    consumers = await names()
    assert "idle-empty" not in consumers
    assert consumers["idle-holding"] == 1
    await bus.close()
    # Closing leaves the group when nothing is pending for us.
    assert set(await names()) == {"idle-holding"}


async def test_restart_with_fixed_name_handles_own_pending_first(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    stream = f"{redis_prefix}restart"
    config = fast_config(redis_url, redis_prefix, consumer_name="worker-1", claim_idle_ms=60_000)
    bus = create_redis_bus(config)
    await bus.publish_many([Event("restart", n) for n in range(3)])
    # The previous life of worker-1 read all three and died.
    await raw.xgroup_create(stream, "g", id="0")
    await raw.xreadgroup("g", "worker-1", {stream: ">"}, count=3)
    await bus.publish(Event("restart", 3))
    seen: list[tuple[int, int]] = []

    async def handler(event: Event) -> None:
        seen.append((event.payload, event.delivery_count))

    await bus.subscribe("restart", handler, group="g")
    await wait_until(lambda: len(seen) == 4, 5, "4 events")
    assert seen == [(0, 2), (1, 2), (2, 2), (3, 1)]
    await bus.close()


async def test_stats_report_backlog(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    bus = create_redis_bus(fast_config(redis_url, redis_prefix, prefetch_count=10))
    release = asyncio.Event()

    async def slow(event: Event) -> None:
        await release.wait()

    empty = await bus.stats("nothing", "g")
    assert (empty.length, empty.pending, empty.dlq_depth) == (0, None, 0)
    await bus.subscribe("backlog", slow, group="g")
    await bus.publish_many([Event("backlog", n) for n in range(25)])
    await asyncio.sleep(0.4)
    stats = await bus.stats("backlog", "g")
    assert stats.length == 25
    assert stats.pending == 10  # prefetch_count
    major = int((await raw.info("server"))["redis_version"].split(".")[0])
    assert stats.lag == (15 if major >= 7 else None)  # XINFO GROUPS reports lag since 7.0
    assert stats.oldest_pending_age is not None and stats.oldest_pending_age >= 0
    release.set()
    await bus.close()
    assert isinstance(bus, RedisStreamsBus)


async def _noop(event: Event) -> None:
    return None


async def test_request_reply_inbox_stream_is_deleted_at_close(
    redis_url: str, redis_prefix: str
) -> None:
    bus = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix, block_ms=100))
    raw = redis_asyncio.Redis.from_url(redis_url)

    async def double(event: Event) -> int:
        return int(event.payload) * 2

    try:
        await bus.subscribe("rpc", double)
        assert await bus.request("rpc", 21, timeout=10) == 42
        inbox = bus.stream_key(bus._inbox or "")
        assert await raw.exists(inbox) == 1
        await bus.close()
        assert await raw.exists(inbox) == 0
    finally:
        await bus.close()
        await raw.aclose()


async def test_foreign_bytes_never_jam_the_consumer(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    """Entries another producer wrote (not UTF-8, no data field, wrong types) are dead-lettered
    one at a time as DecodeError with their bytes, while every valid event between them is
    handled exactly once and nothing valid reaches the dead-letter topic."""
    bus = create_redis_bus(fast_config(redis_url, redis_prefix, prefetch_count=50))
    stream = f"{redis_prefix}foreign"
    handled: list[int] = []
    dead: list[DLQEntry] = []

    async def handler(event: Event) -> None:
        handled.append(event.payload)

    async def on_dead_entry(entry: DLQEntry) -> None:  # foreign bytes are not events
        dead.append(entry)

    envelope = json.loads(bus.codec.encode(Event("foreign", 0)))
    wrong_types = json.dumps({**envelope, "id": 12, "headers": ["x"]}).encode()
    foreign: list[dict[Any, Any]] = [
        {b"data": b"garbage", b"key": b"\xff"},  # the reproduction from the reliability issue
        {b"\xff\xfe": b"\xff"},  # its only field, name and value, not UTF-8
        {b"data": b"\xff\xfe\x00not utf-8"},
        {b"order": b"42", b"status": b"\x80paid"},
        {b"data": wrong_types, b"key": b"k"},
        {b"data": b'{"v": 1}'},  # missing fields
    ]
    await run_consumer(bus, "foreign", handler, ConsumerOptions(max_retries=1), group="g")
    await create_dlq_consumer(bus, "foreign.DLQ", on_dead_entry, group="dlq")
    for n, fields in enumerate(foreign):
        await bus.publish(Event("foreign", 2 * n, key=f"k{n % 2}"))
        await raw.xadd(stream, fields)
        await bus.publish(Event("foreign", 2 * n + 1))
    valid = 2 * len(foreign)
    await wait_until(
        lambda: len(handled) >= valid and len(dead) >= len(foreign),
        15,
        "every valid event handled and every foreign entry dead-lettered",
    )
    await asyncio.sleep(0.3)  # a late duplicate or a late dead letter would show up now
    assert sorted(handled) == list(range(valid))
    assert {d.error_type for d in dead} == {"DecodeError"}
    assert [d.original_event for d in dead] == [None] * len(foreign)
    assert [d.attempts for d in dead] == [1] * len(foreign)
    assert dead[0].original_data == b"garbage" and "not UTF-8" in dead[0].error
    assert dead[1].original_data == b"\xff" and "no 'data' field" in dead[1].error
    assert dead[2].original_data == b"\xff\xfe\x00not utf-8"
    assert json.loads(dead[3].original_data) == {"order": "42", "status": "\\x80paid"}
    assert dead[4].original_data == wrong_types
    await bus.close()
    assert (await raw.xpending(stream, "g"))["pending"] == 0
