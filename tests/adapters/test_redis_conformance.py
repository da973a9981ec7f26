"""The conformance suite against a real redis-server."""

from __future__ import annotations

import pytest

from dotmac.events import EventBus, RedisConfig, create_redis_bus
from dotmac.events.codec import Codec
from dotmac.events.observability import Observer
from dotmac.events.testing import BusFactory, Capabilities, ConformanceSuite

pytestmark = pytest.mark.redis


class TestRedisConformance(ConformanceSuite):
    # A closed consumer's unacked entries are marked idle on release, so the next consumer of
    # the group claims them on its next claim pass (claim_interval).
    capabilities = Capabilities(request_reply=True, timeout=15.0, handoff_timeout=5.0)

    @pytest.fixture
    def bus_factory(self, redis_url: str, redis_prefix: str) -> BusFactory:
        config = RedisConfig(
            url=redis_url,
            key_prefix=redis_prefix,
            block_ms=100,
            claim_idle_ms=500,
            claim_interval=0.1,
            pattern_refresh=0.3,
        )

        async def make(*, codec: Codec | None = None, observer: Observer | None = None) -> EventBus:
            return create_redis_bus(config, codec=codec, observer=observer)

        return make
