"""Connection loss: the server stops and restarts (empty: no persistence) on the same port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dotmac.events import Event, PublishError, RedisConfig, create_redis_bus
from dotmac.events.observability import NoopObserver
from dotmac.events.testing import wait_until
from tests.support.redis_server import local_redis_server

pytestmark = [pytest.mark.redis, pytest.mark.slow]


class ErrorRecorder(NoopObserver):
    def __init__(self) -> None:
        self.wheres: list[str] = []

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        self.wheres.append(where)


async def test_publish_fails_during_outage_and_consumer_resumes_after_restart() -> None:
    observer = ErrorRecorder()
    with local_redis_server() as server:
        config = RedisConfig(
            url=server.url,
            block_ms=100,
            claim_idle_ms=400,
            claim_interval=0.1,
            connection_timeout=1.0,
            publish_retries=2,
            reconnect_backoff_base_ms=50,
            reconnect_backoff_max_ms=200,
        )
        bus = create_redis_bus(config, observer=observer)
        got: list[Any] = []

        async def handler(event: Event) -> None:
            got.append(event.payload)

        await bus.subscribe("orders", handler, group="billing")
        await bus.publish(Event("orders", 1))
        await wait_until(lambda: got == [1], 5, "the first event")

        server.stop()
        started = time.monotonic()
        with pytest.raises(PublishError) as info:
            await bus.publish(Event("orders", "lost?"))
        assert time.monotonic() - started < 5  # bounded: 3 attempts, short backoff
        assert "connection" in str(info.value)
        with pytest.raises(PublishError):
            await bus.publish_many([Event("orders", "a"), Event("orders", "b")])
        health = await bus.health()
        assert not health.healthy
        await wait_until(lambda: "connection" in observer.wheres, 5, "the outage reported")
        await asyncio.sleep(0.5)  # the consumer keeps retrying with backoff meanwhile

        server.start()  # same port, empty: the stream and its group are gone
        await bus.publish(Event("orders", 2))
        await wait_until(lambda: got == [1, 2], 10, "the consumer to resume")
        assert (await bus.health()).healthy
        await bus.publish(Event("orders", 3))
        await wait_until(lambda: got == [1, 2, 3], 5, "one more")
        await bus.close()
        probe = create_redis_bus(config)
        stats = await probe.stats("orders", "billing")
        await probe.close()
        assert stats.pending == 0  # close acked everything handled
    # Reported once per outage, not once per retry.
    assert observer.wheres.count("connection") == 1


async def test_closing_during_outage_is_bounded() -> None:
    with local_redis_server() as server:
        config = RedisConfig(
            url=server.url,
            block_ms=100,
            claim_idle_ms=400,
            claim_interval=0.1,
            connection_timeout=0.5,
        )
        bus = create_redis_bus(config)
        await bus.subscribe("t", _noop, group="g")
        server.stop()
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await bus.close(timeout=2.0)
        assert time.monotonic() - started < 5
        assert bus.closed


async def _noop(event: Event) -> None:
    return None
