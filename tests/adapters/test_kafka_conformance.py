"""The conformance suite against a real Kafka-protocol broker (Tansu unless configured)."""

from __future__ import annotations

import pytest

from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.bus import EventBus
from dotmac.events.codec import Codec
from dotmac.events.observability.observer import Observer
from dotmac.events.testing.conformance import BusFactory, Capabilities, ConformanceSuite
from tests.support.kafka_helpers import kafka_test_config

pytestmark = pytest.mark.kafka


class TestKafkaConformance(ConformanceSuite):
    # Nothing is switched off: Tansu supports everything the suite uses (topics, keys, headers,
    # consumer groups with manual commits, rebalances). A group join takes about half the
    # session timeout, so hand-offs get the default 15 s bound.
    # Kafka deletes records only up to an offset, never one alone (delete_records=False), and
    # Tansu drops the connection on DeleteRecords although it advertises it (purge_all=False).
    capabilities = Capabilities(
        request_reply=True,
        delete_records=False,
        purge_all=False,
        timeout=20.0,
        handoff_timeout=15.0,
    )

    @pytest.fixture
    def bus_factory(self, kafka_bootstrap: str) -> BusFactory:
        async def make(*, codec: Codec | None = None, observer: Observer | None = None) -> EventBus:
            config = kafka_test_config(kafka_bootstrap, pattern_refresh=0.5)
            return create_kafka_bus(config, codec=codec, observer=observer)

        return make
