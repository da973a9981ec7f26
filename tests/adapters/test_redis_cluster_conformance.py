"""The conformance suite against a real Redis Cluster (3 masters), topics in 4 partitions."""

from __future__ import annotations

import pytest

from dotmac.events import EventBus
from dotmac.events.adapters.redis_cluster import RedisClusterConfig, create_redis_cluster_bus
from dotmac.events.codec import Codec
from dotmac.events.observability import Observer
from dotmac.events.testing import BusFactory, Capabilities, ConformanceSuite

pytestmark = pytest.mark.redis_cluster


class TestRedisClusterConformance(ConformanceSuite):
    # As on one server: a closed consumer's unacked entries are marked idle on release and the
    # next consumer of the group claims them on its next claim pass, per partition.
    capabilities = Capabilities(request_reply=True, timeout=15.0, handoff_timeout=5.0)

    @pytest.fixture
    def bus_factory(self, redis_cluster_url: str, redis_prefix: str) -> BusFactory:
        config = RedisClusterConfig(
            url=redis_cluster_url,
            key_prefix=redis_prefix,
            partitions=4,
            block_ms=100,
            claim_idle_ms=500,
            claim_interval=0.1,
            pattern_refresh=0.3,
        )

        async def make(*, codec: Codec | None = None, observer: Observer | None = None) -> EventBus:
            return create_redis_cluster_bus(config, codec=codec, observer=observer)

        return make
