"""The conformance suite against the memory bus."""

from __future__ import annotations

import pytest

from dotmac.events import EventBus, MemoryBus, MemoryConfig, create_memory_bus
from dotmac.events.codec import Codec
from dotmac.events.observability import Observer
from dotmac.events.testing import BusFactory, Capabilities, ConformanceSuite


class TestMemoryConformance(ConformanceSuite):
    # In-process: a closed consumer's unacked messages go back to its group at once.
    capabilities = Capabilities(request_reply=True, timeout=10.0, handoff_timeout=1.0)

    @pytest.fixture
    def bus_factory(self) -> BusFactory:
        # The first bus of a test is the broker; later ones are clients of the same log, as a
        # second process would connect to the same Redis.
        broker: list[MemoryBus] = []

        async def make(*, codec: Codec | None = None, observer: Observer | None = None) -> EventBus:
            if not broker:
                broker.append(create_memory_bus(MemoryConfig(), codec=codec, observer=observer))
                return broker[0]
            return broker[0].client(codec=codec, observer=observer)

        return make
