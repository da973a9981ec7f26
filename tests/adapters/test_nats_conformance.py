"""The conformance suite against a real nats-server with JetStream."""

from __future__ import annotations

import pytest

from dotmac.events import EventBus, NatsConfig, create_nats_bus
from dotmac.events.codec import Codec
from dotmac.events.observability import Observer
from dotmac.events.testing import BusFactory, Capabilities, ConformanceSuite

pytestmark = pytest.mark.nats


class TestNatsConformance(ConformanceSuite):
    # Nothing is switched off. A closed consumer NAKs what it held, so the server hands it to
    # the next pull of the group at once; a dead one's messages move after ack_wait. Dead
    # letters are deleted one by one (STREAM.MSG.DELETE by sequence) or all (STREAM.PURGE).
    capabilities = Capabilities(
        timeout=15.0, handoff_timeout=5.0, delete_records=True, purge_all=True
    )

    @pytest.fixture
    def bus_factory(self, nats_url: str, nats_prefixes: tuple[str, str]) -> BusFactory:
        stream_prefix, subject_prefix = nats_prefixes
        config = NatsConfig(
            servers=nats_url,
            stream_prefix=stream_prefix,
            subject_prefix=subject_prefix,
            ack_wait=3.0,
            fetch_wait=0.5,
            pattern_refresh=0.3,
        )

        async def make(*, codec: Codec | None = None, observer: Observer | None = None) -> EventBus:
            return create_nats_bus(config, codec=codec, observer=observer)

        return make
