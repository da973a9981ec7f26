"""How the Kafka bus fetches: no fetch left waiting at a log's end holds up records elsewhere.

Both tests run with a long ``fetch_max_wait_ms``: Tansu holds a fetch at the end of a log for
all of it, even when records arrive meanwhile, so a fetch sent at the wrong moment shows as
seconds lost.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dotmac.events import Event
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.testing.conformance import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic

pytestmark = pytest.mark.kafka

FETCH_WAIT_MS = 3000
EVENTS = 2100
HANDLER_S = 0.001  # ~700 records per fetch take longer than 100 ms (aiokafka's prefetch backoff)


async def test_backlog_on_one_partition_is_not_held_up_by_empty_ones(
    kafka_bootstrap: str,
) -> None:
    """All events on one of three partitions: a fetch of the two empty partitions alone would
    be held by the broker while the backlog waits behind it (aiokafka sends one fetch per
    broker at a time), so every fetch must carry the busy partition. Before, each of the
    three fetches after the first cost a fetch wait: over 9 s instead of the handlers' 2.3 s."""
    config = kafka_test_config(
        kafka_bootstrap,
        num_partitions=3,
        fetch_max_wait_ms=FETCH_WAIT_MS,
        fetch_max_bytes=150_000,  # about 700 of these records
    )
    bus = create_kafka_bus(config)
    topic = unique_topic("backlog")
    handled: list[int] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(HANDLER_S)
        handled.append(event.payload)

    try:
        for start in range(0, EVENTS, 50):
            await bus.publish_many([Event(topic, i, key="one") for i in range(start, start + 50)])
        await bus.subscribe(topic, handler, group="g")
        await wait_until(lambda: len(handled) >= 1, 20, "the first event")
        started = time.monotonic()
        await wait_until(lambda: len(handled) >= EVENTS, 60, f"all {EVENTS} events")
        elapsed = time.monotonic() - started
        assert sorted(handled) == list(range(EVENTS))
        assert elapsed < 6.0, f"{EVENTS} events took {elapsed:.1f} s"
    finally:
        await bus.close(timeout=5.0)


async def test_delivery_counts_are_read_without_a_fetch_wait(kafka_bootstrap: str) -> None:
    """Each subscription reads the attempts log before its first record is handled, the second
    one past this bus's own write for the first. A fetch left waiting at the log's end would
    be in the way (before: up to the whole fetch wait for the first, about half of it for the
    second, less the second group join)."""
    config = kafka_test_config(kafka_bootstrap, fetch_max_wait_ms=2 * FETCH_WAIT_MS)
    bus = create_kafka_bus(config)
    try:
        for name in ("first", "second"):
            topic = unique_topic(f"counts-{name}")
            await bus.publish(Event(topic, name))
            handled = asyncio.Event()

            async def handler(event: Event, handled: asyncio.Event = handled) -> None:
                handled.set()

            await bus.subscribe(topic, handler, group="g")  # returns once partitions are assigned
            started = time.monotonic()
            await asyncio.wait_for(handled.wait(), 20)
            elapsed = time.monotonic() - started
            assert elapsed < 0.5, f"{name} subscription's first event after {elapsed:.2f} s"
    finally:
        await bus.close(timeout=5.0)
