"""Coalesced publishing on Redis: concurrent publish() calls share one pipeline while one is in
flight, and each caller still gets its own outcome. Real servers; no timing assertions."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import Event, JsonCodec, PublishError, RedisConfig, create_redis_bus
from dotmac.events.adapters.redis import publisher as publisher_module
from dotmac.events.adapters.redis.bus import RedisStreamsBus
from tests.support.redis_server import local_redis_server

pytestmark = pytest.mark.redis


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def bus(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStreamsBus]:
    bus = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix))
    yield bus
    await bus.close()


async def stream_ids(client: redis_asyncio.Redis, stream: str) -> collections.Counter[str]:
    """How often each event id appears in ``stream``."""
    entries = await client.xrange(stream, "-", "+")
    codec = JsonCodec()
    return collections.Counter(str(codec.decode(fields[b"data"]).id) for _, fields in entries)


def record_pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the publisher's round trips: one item per pipeline sent, its number of XADDs."""
    sizes: list[int] = []
    real = publisher_module.RedisPublisher._round_trip

    async def spy(
        self: publisher_module.RedisPublisher, commands: list[bytes], limit: float
    ) -> list[Any]:
        sizes.append(len(commands))
        return await real(self, commands, limit)

    monkeypatch.setattr(publisher_module.RedisPublisher, "_round_trip", spy)
    return sizes


async def test_200_concurrent_publishers_each_get_their_own_event_accepted(
    bus: RedisStreamsBus, raw: redis_asyncio.Redis, redis_prefix: str
) -> None:
    events = [Event("orders", {"n": i}, key=f"k{i % 7}") for i in range(200)]
    results = await asyncio.gather(*(bus.publish(event) for event in events))
    assert results == [None] * 200
    seen = await stream_ids(raw, f"{redis_prefix}orders")
    assert seen == collections.Counter(str(event.id) for event in events)
    # and the wire format is the bus's: data + key
    entries = await raw.xrange(f"{redis_prefix}orders", "-", "+")
    assert {fields[b"key"] for _, fields in entries} == {f"k{i}".encode() for i in range(7)}


async def test_concurrent_publishes_share_pipelines(
    bus: RedisStreamsBus,
    raw: redis_asyncio.Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = record_pipelines(monkeypatch)
    await asyncio.gather(*(bus.publish(Event("orders", i)) for i in range(200)))
    # The first caller goes alone; the 199 arriving while it is in flight share the next one.
    assert sizes == [1, 199]
    assert await raw.xlen(f"{redis_prefix}orders") == 200


async def test_the_server_sees_fewer_reads_than_publishes() -> None:
    # A private server: its read counter then counts this bus's round trips (and our INFOs).
    with local_redis_server() as server:
        client = redis_asyncio.Redis.from_url(server.url)
        bus = create_redis_bus(RedisConfig(url=server.url))
        try:
            await bus.publish(Event("warm", 0))  # connects
            before = (await client.info("stats"))["total_reads_processed"]
            await asyncio.gather(*(bus.publish(Event("orders", i)) for i in range(200)))
            after = (await client.info("stats"))["total_reads_processed"]
            assert await client.xlen("orders") == 200
            # One publish at a time would be 200 reads; coalesced it is a handful (a large
            # pipeline can take a few reads of the server's 16 KiB buffer).
            assert after - before < 50, after - before
        finally:
            await bus.close()
            await client.aclose()


async def test_publish_many_goes_in_one_pipeline(
    bus: RedisStreamsBus,
    raw: redis_asyncio.Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = record_pipelines(monkeypatch)
    events = [Event("orders", i, key=f"k{i % 3}") for i in range(100)]
    await bus.publish_many(events)
    assert sizes == [100]
    entries = await raw.xrange(f"{redis_prefix}orders", "-", "+")
    codec = JsonCodec()
    assert [codec.decode(fields[b"data"]).payload for _, fields in entries] == list(range(100))


async def test_a_pipeline_never_exceeds_its_bound(
    bus: RedisStreamsBus,
    raw: redis_asyncio.Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publisher_module, "MAX_PIPELINE_ENTRIES", 25)
    sizes = record_pipelines(monkeypatch)
    await asyncio.gather(*(bus.publish(Event("orders", i)) for i in range(200)))
    assert sum(sizes) == 200
    assert max(sizes) == 25
    assert len(sizes) < 200 / 4
    assert await raw.xlen(f"{redis_prefix}orders") == 200


async def test_a_refused_xadd_fails_only_its_caller(
    bus: RedisStreamsBus,
    raw: redis_asyncio.Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await raw.set(f"{redis_prefix}not-a-stream", "a string")
    sizes = record_pipelines(monkeypatch)
    first = asyncio.ensure_future(bus.publish(Event("orders", "first")))
    await asyncio.sleep(0)  # the first caller is in flight; the rest queue behind it
    good = [Event("orders", i) for i in range(20)]
    results = await asyncio.gather(
        *(bus.publish(event) for event in good[:10]),
        bus.publish(Event("not-a-stream", "bad")),
        *(bus.publish(event) for event in good[10:]),
        return_exceptions=True,
    )
    await first
    assert sizes[:2] == [1, 21]  # the bad XADD shared the pipeline with 20 good ones
    failure = results.pop(10)
    assert isinstance(failure, PublishError)
    assert "WRONGTYPE" in str(failure)
    assert results == [None] * 20
    seen = await stream_ids(raw, f"{redis_prefix}orders")
    assert all(seen[str(event.id)] == 1 for event in good)
    assert len(seen) == 21
    # alone, too; and the connection is still good afterwards
    with pytest.raises(PublishError, match="WRONGTYPE"):
        await bus.publish(Event("not-a-stream", "bad again"))
    await bus.publish(Event("orders", "after"))
    assert await raw.xlen(f"{redis_prefix}orders") == 22


async def test_publish_many_with_a_refused_entry_raises_and_writes_the_others(
    bus: RedisStreamsBus, raw: redis_asyncio.Redis, redis_prefix: str
) -> None:
    await raw.set(f"{redis_prefix}not-a-stream", "a string")
    events = [Event("orders", 0), Event("not-a-stream", 1), Event("orders", 2)]
    with pytest.raises(PublishError, match="WRONGTYPE"):
        await bus.publish_many(events)
    assert await raw.xlen(f"{redis_prefix}orders") == 2  # not transactional, as before


async def test_cancelling_a_queued_caller_leaves_the_others_fine(
    bus: RedisStreamsBus, raw: redis_asyncio.Redis, redis_prefix: str
) -> None:
    events = [Event("orders", i) for i in range(50)]
    tasks = [asyncio.ensure_future(bus.publish(event)) for event in events]
    await asyncio.sleep(0)  # task 0 is in flight, 1..49 are queued
    tasks[7].cancel()
    tasks[30].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i in (7, 30):
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result is None, (i, result)
    seen = await stream_ids(raw, f"{redis_prefix}orders")
    assert all(seen[str(event.id)] == 1 for i, event in enumerate(events) if i not in (7, 30))
    # never sent: they were cancelled before their pipeline was taken
    assert seen[str(events[7].id)] == 0 and seen[str(events[30].id)] == 0
    await bus.publish(Event("orders", "after"))
    assert await raw.xlen(f"{redis_prefix}orders") == 49


async def test_cancelling_the_caller_in_flight_leaves_the_queued_ones_fine(
    bus: RedisStreamsBus, raw: redis_asyncio.Redis, redis_prefix: str
) -> None:
    events = [Event("orders", i) for i in range(30)]
    tasks = [asyncio.ensure_future(bus.publish(event)) for event in events]
    await asyncio.sleep(0)  # task 0 sent its XADD and waits for the reply
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [None] * 29
    seen = await stream_ids(raw, f"{redis_prefix}orders")
    assert all(seen[str(event.id)] == 1 for event in events[1:])
    assert seen[str(events[0].id)] <= 1  # it may have been written before the cancel
    await bus.publish(Event("orders", "after"))


async def test_cancelling_a_caller_whose_pipeline_is_in_flight_leaves_it_fine(
    bus: RedisStreamsBus,
    raw: redis_asyncio.Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []
    second_sent = asyncio.Event()
    real = publisher_module.RedisPublisher._round_trip

    async def spy(
        self: publisher_module.RedisPublisher, commands: list[bytes], limit: float
    ) -> list[Any]:
        sizes.append(len(commands))
        if len(sizes) == 2:
            # The drain task writes the pipeline before it first yields, so by the time the
            # test wakes up the pipeline is on the wire.
            second_sent.set()
        return await real(self, commands, limit)

    monkeypatch.setattr(publisher_module.RedisPublisher, "_round_trip", spy)
    events = [Event("orders", i) for i in range(30)]
    tasks = [asyncio.ensure_future(bus.publish(event)) for event in events]
    await second_sent.wait()
    tasks[5].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sizes[:2] == [1, 29]
    assert all(result is None for i, result in enumerate(results) if i != 5)
    seen = await stream_ids(raw, f"{redis_prefix}orders")
    assert all(seen[str(event.id)] == 1 for event in events)  # 5 too: it had been sent


async def test_entries_never_sent_are_resent_for_their_callers_only(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection fails after the first 10 entries of a 20-entry pipeline were written and
    answered, before the other 10 were written: those 10 callers return, the other 10 entries
    are sent again, and every event is written exactly once."""
    config = RedisConfig(
        url=redis_url, key_prefix=redis_prefix, publish_retries=1, reconnect_backoff_base_ms=0
    )
    bus = create_redis_bus(config)
    real = publisher_module.RedisPublisher._round_trip
    sizes: list[int] = []

    async def fail_after_ten(
        self: publisher_module.RedisPublisher, commands: list[bytes], limit: float
    ) -> list[Any]:
        sizes.append(len(commands))
        if len(commands) < 20:
            return await real(self, commands, limit)
        answered = await real(self, commands[:10], limit)
        await self._drop_connection()
        unsent = publisher_module.NotSent("connection refused (test)")
        return answered + [unsent] * (len(commands) - 10)

    monkeypatch.setattr(publisher_module.RedisPublisher, "_round_trip", fail_after_ten)
    try:
        first = asyncio.ensure_future(bus.publish(Event("orders", "first")))
        await asyncio.sleep(0)
        events = [Event("orders", i) for i in range(20)]
        await asyncio.gather(*(bus.publish(event) for event in events))
        await first
    finally:
        await bus.close()
    assert sizes == [1, 20, 10]
    seen = await stream_ids(raw, f"{redis_prefix}orders")
    assert all(seen[str(event.id)] == 1 for event in events)


async def test_entries_written_without_a_reply_fail_and_are_never_resent(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after 10 of 20 entries were answered; the other 10 were written
    (their replies are lost): resending them could write them twice, so their callers get
    PublishError(may_have_been_written=True) and nothing is sent again."""
    config = RedisConfig(
        url=redis_url, key_prefix=redis_prefix, publish_retries=5, reconnect_backoff_base_ms=0
    )
    bus = create_redis_bus(config)
    real = publisher_module.RedisPublisher._round_trip
    sizes: list[int] = []

    async def lose_replies_after_ten(
        self: publisher_module.RedisPublisher, commands: list[bytes], limit: float
    ) -> list[Any]:
        sizes.append(len(commands))
        replies = await real(self, commands, limit)
        if len(commands) < 20:
            return replies
        await self._drop_connection()
        lost = redis_asyncio.ConnectionError("connection reset (test)")
        return replies[:10] + [lost] * (len(commands) - 10)

    monkeypatch.setattr(publisher_module.RedisPublisher, "_round_trip", lose_replies_after_ten)
    try:
        first = asyncio.ensure_future(bus.publish(Event("orders", "first")))
        await asyncio.sleep(0)
        events = [Event("orders", i) for i in range(20)]
        results = await asyncio.gather(
            *(bus.publish(event) for event in events), return_exceptions=True
        )
        await first
    finally:
        await bus.close()
    assert sizes == [1, 20]
    assert results[:10] == [None] * 10
    for failure in results[10:]:
        assert isinstance(failure, PublishError)
        assert failure.may_have_been_written is True
    seen = await stream_ids(raw, f"{redis_prefix}orders")
    assert all(seen[str(event.id)] == 1 for event in events)  # written once, none twice


async def test_connection_failures_past_the_retries_fail_their_callers(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RedisConfig(
        url=redis_url, key_prefix=redis_prefix, publish_retries=1, reconnect_backoff_base_ms=0
    )
    bus = create_redis_bus(config)
    real = publisher_module.RedisPublisher._round_trip

    async def second_half_unsent(
        self: publisher_module.RedisPublisher, commands: list[bytes], limit: float
    ) -> list[Any]:
        if len(commands) == 1:
            return await real(self, commands, limit)
        half = len(commands) // 2
        answered = await real(self, commands[:half], limit)
        unsent = publisher_module.NotSent("connection refused (test)")
        return answered + [unsent] * (len(commands) - half)

    monkeypatch.setattr(publisher_module.RedisPublisher, "_round_trip", second_half_unsent)
    try:
        first = asyncio.ensure_future(bus.publish(Event("orders", "first")))
        await asyncio.sleep(0)
        results = await asyncio.gather(
            *(bus.publish(Event("orders", i)) for i in range(8)), return_exceptions=True
        )
        await first
    finally:
        await bus.close()
    # 8 entries: 4 answered; 4 resent, of which 2 answered; the last 2 out of retries.
    assert results[:6] == [None] * 6
    for failure in results[6:]:
        assert isinstance(failure, PublishError)
        assert "2 attempt(s)" in str(failure)
        assert failure.may_have_been_written is False  # never written: safe to publish again
    assert await raw.xlen(f"{redis_prefix}orders") == 7


async def test_a_connection_closed_by_the_server_is_reopened_without_a_retry() -> None:
    with local_redis_server() as server:  # private: CLIENT KILL must hit nobody else
        client = redis_asyncio.Redis.from_url(server.url)
        bus = create_redis_bus(RedisConfig(url=server.url, publish_retries=0))
        try:
            await bus.publish(Event("orders", 1))
            killed = await client.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
            await asyncio.sleep(0.2)  # let the loop read the server's FIN (no timing assertion)
            await bus.publish(Event("orders", 2))  # no retry budget: it must not spend one
            assert await client.xlen("orders") == 2
        finally:
            await bus.close()
            await client.aclose()


async def test_close_waits_for_queued_callers(redis_url: str, redis_prefix: str) -> None:
    bus = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix))
    tasks = [asyncio.ensure_future(bus.publish(Event("orders", i))) for i in range(20)]
    await asyncio.sleep(0)
    await bus.close()
    assert await asyncio.gather(*tasks) == [None] * 20
    probe = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix))
    try:
        assert (await probe.stats("orders")).length == 20
    finally:
        await probe.close()
