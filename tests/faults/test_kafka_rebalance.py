"""Two consumers share a 3-partition topic; one leaves mid-stream; nothing is lost."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dotmac.events import Event
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.testing.conformance import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 600


async def test_consumer_leaving_mid_stream_loses_nothing(kafka_bootstrap: str) -> None:
    topic = unique_topic("share")
    config = kafka_test_config(kafka_bootstrap, num_partitions=3)
    bus_a, bus_b = create_kafka_bus(config), create_kafka_bus(config)
    handled: dict[str, Counter[int]] = {"a": Counter(), "b": Counter()}
    order: dict[str, list[int]] = {}

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(event: Event) -> None:
            await asyncio.sleep(0.003)
            handled[name][event.payload["n"]] += 1
            order.setdefault(event.key or "", []).append(event.payload["n"])

        return handler

    try:
        await bus_a.subscribe(topic, handler_for("a"), group="shared", concurrency=4)
        sub_b = await bus_b.subscribe(topic, handler_for("b"), group="shared", concurrency=4)
        await asyncio.sleep(1.5)  # let the rebalance that b's join started settle
        await bus_a.publish_many(
            [Event(topic, {"n": n}, key=f"key-{n % 12}") for n in range(TOTAL)]
        )
        await wait_until(lambda: len(handled["b"]) >= 30, 20, "b to handle some")
        await sub_b.close(timeout=5.0)  # leaves the group mid-stream
        b_done = len(handled["b"])
        everything = lambda: set(handled["a"]) | set(handled["b"])  # noqa: E731
        await wait_until(lambda: len(everything()) >= TOTAL, 30, "a to take over b's partitions")
        await asyncio.sleep(0.5)
    finally:
        await asyncio.gather(bus_a.close(timeout=5.0), bus_b.close(timeout=5.0))

    assert everything() == set(range(TOTAL)), "lost messages"
    assert handled["a"] and b_done >= 30 and b_done < TOTAL
    twice = sum(1 for n in range(TOTAL) if handled["a"][n] + handled["b"][n] > 1)
    # Kafka commits one position per partition: what b finished after an offset it gave back
    # unhandled is handled again by a. That is bounded by what b held at once (its prefetch).
    assert twice <= bus_b._prefetch(4), f"{twice} handled twice"
    assert max(handled["a"].values()) == 1 and max(handled["b"].values()) == 1
    print(f"\nkafka rebalance: a handled {len(handled['a'])}, b handled {b_done}, twice {twice}")
