"""Kafka delivery counts kept in the attempts topic: a rebalance continues a failing record's
count, healthy consumption writes once per partition per assignment, not per record, and a
partition its previous owner left uncommitted is replayed one record at a time."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dotmac.events import ConsumerOptions, DLQEntry, Event, KafkaBus, KafkaConfig, run_consumer
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.adapters.kafka.attempts import decode_deliveries, encode_deliveries
from dotmac.events.dlq import DeadLetters
from dotmac.events.errors import ConfigurationError
from dotmac.events.testing.conformance import wait_until
from tests.support.kafka_attempts import stored_counts
from tests.support.kafka_helpers import kafka_test_config, unique_topic


async def _dead_letters(bus: KafkaBus, dlq_topic: str, timeout: float) -> list[DLQEntry]:
    deadline = asyncio.get_running_loop().time() + timeout
    dead_letters = DeadLetters(bus, dlq_topic)
    while not (found := await dead_letters.list()):
        assert asyncio.get_running_loop().time() < deadline, f"no dead letter on {dlq_topic}"
        await asyncio.sleep(0.2)
    return found


def test_counts_round_trip_and_foreign_bytes_read_as_none() -> None:
    value = encode_deliveries({17: 3, 4: 1})
    assert value == b'{"deliveries":{"4":1,"17":3}}'
    assert decode_deliveries(value) == {4: 1, 17: 3}
    for foreign in (None, b"", b"\x00\xff", b"[]", b'{"deliveries": 3}', b'{"deliveries":{"x":1}}'):
        assert decode_deliveries(foreign) == {}


@pytest.mark.parametrize("name", ["attempts", "_with space", "_" + "a" * 249, 7])
def test_attempts_topic_must_be_an_internal_topic_name(name: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        KafkaConfig(attempts_topic=name)  # type: ignore[arg-type]
    assert caught.value.field == "attempts_topic"


def test_attempts_topic_default_and_off() -> None:
    assert KafkaConfig().attempts_topic == "_dotmac.attempts"
    assert KafkaConfig(attempts_topic=None).attempts_topic is None


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_rebalance_continues_the_count(kafka_bootstrap: str) -> None:
    topic = unique_topic("recount")
    group = "recount"
    config = kafka_test_config(kafka_bootstrap, num_partitions=1)
    first = create_kafka_bus(config)
    before: list[int] = []

    async def fail_first(event: Event) -> None:
        before.append(event.delivery_count)
        raise RuntimeError("failing")

    try:
        await first.publish(Event(topic, {"n": 1}))
        slow = ConsumerOptions(max_retries=3, backoff_base_ms=2000, jitter=False)
        await run_consumer(first, topic, fail_first, slow, group=group)
        await wait_until(lambda: len(before) == 2, 30, "two failed deliveries")
    finally:
        await first.close(timeout=5.0)  # while it waits to deliver again: a clean rebalance

    second = create_kafka_bus(config)
    after: list[int] = []

    async def fail_second(event: Event) -> None:
        after.append(event.delivery_count)
        raise RuntimeError("still failing")

    try:
        fast = ConsumerOptions(max_retries=3, backoff_base_ms=10, jitter=False)
        await run_consumer(second, topic, fail_second, fast, group=group)
        found = await _dead_letters(second, f"{topic}.DLQ", 30)
    finally:
        await second.close(timeout=5.0)
    counts = await stored_counts(kafka_bootstrap, config.group_id(group, topic), topic)
    assert before == [1, 2]
    assert after == [3, 4]  # max_retries=3: four deliveries in all, across two consumers
    assert len(found) == 1
    assert found[0].attempts == 4 and found[0].error_type == "RuntimeError"
    assert [deliveries for _, deliveries in counts] == [{0: n} for n in (1, 2, 3, 4)]


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_healthy_consumption_writes_per_assignment_not_per_record(
    kafka_bootstrap: str,
) -> None:
    topic = unique_topic("healthy")
    group = "healthy"
    config = kafka_test_config(kafka_bootstrap, num_partitions=3)
    group_id = config.group_id(group, topic)
    seen: Counter[int] = Counter()

    async def handle(event: Event) -> None:
        seen[event.delivery_count] += 1

    publisher = create_kafka_bus(config)
    try:
        batches = iter(range(0, 1200, 300))

        async def publish_next() -> None:
            start = next(batches)
            await publisher.publish_many(
                [Event(topic, {"n": n}, key=f"k{n}") for n in range(start, start + 300)]
            )

        await publish_next()
        consumer = create_kafka_bus(config)
        try:
            await consumer.subscribe(topic, handle, group=group, concurrency=4)
            await wait_until(lambda: seen.total() == 300, 30, "the first 300")
            first_assignment = await stored_counts(kafka_bootstrap, group_id, topic)
            await publish_next()
            await publish_next()
            await wait_until(lambda: seen.total() == 900, 30, "900")
            same_assignment = await stored_counts(kafka_bootstrap, group_id, topic)
        finally:
            await consumer.close(timeout=5.0)
        consumer = create_kafka_bus(config)  # a new assignment of every partition
        try:
            await consumer.subscribe(topic, handle, group=group, concurrency=4)
            idle = await stored_counts(kafka_bootstrap, group_id, topic)
            await publish_next()
            await wait_until(lambda: seen.total() == 1200, 30, "all 1200")
            second_assignment = await stored_counts(kafka_bootstrap, group_id, topic)
        finally:
            await consumer.close(timeout=5.0)
    finally:
        await publisher.close(timeout=5.0)
    print(
        f"\nattempts writes: {len(first_assignment)} for the first 300 records, "
        f"{len(same_assignment)} after 900, {len(second_assignment)} after 1200 and a "
        "second assignment"
    )
    assert seen == {1: 1200}  # nothing failed: every record was delivered once
    # one write per partition when its first record was fetched, then none for 600 more
    assert sorted(p for p, _ in first_assignment) == [0, 1, 2]
    assert all(deliveries == {0: 1} for _, deliveries in first_assignment)
    assert same_assignment == first_assignment
    assert idle == first_assignment  # a newly assigned partition with nothing to read: none
    assert len(second_assignment) == 6  # one per partition for the new assignment
    assert all(len(d) == 1 and 1 in d.values() for _, d in second_assignment[3:])


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_partition_left_uncommitted_is_replayed_one_record_at_a_time(
    kafka_bootstrap: str,
) -> None:
    """The first owner hands record 0 out and never finishes it, so the next owner finds it
    counted at the committed position: it hands out the subscription's prefetch (500) one
    record at a time, each counted before and committed after its handler, then goes back to
    the fast path (concurrent handlers, no writes)."""
    topic = unique_topic("careful")
    group = "careful"
    total, prefetch = 600, 500
    config = kafka_test_config(kafka_bootstrap, num_partitions=1)
    group_id = config.group_id(group, topic)
    first = create_kafka_bus(config)
    started = asyncio.Event()

    async def never_finish(event: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    try:
        await first.publish_many([Event(topic, {"n": n}) for n in range(total)])
        await first.subscribe(topic, never_finish, group=group)
        await asyncio.wait_for(started.wait(), 30)
    finally:
        await first.close(timeout=0.5)
    before = await stored_counts(kafka_bootstrap, group_id, topic)

    second = create_kafka_bus(config)
    order: list[int] = []
    counts: dict[int, int] = {}
    running = 0
    overlap: dict[int, int] = {}  # n -> handlers running while it ran

    async def handle(event: Event) -> None:
        nonlocal running
        n = event.payload["n"]
        running += 1
        overlap[n] = running
        order.append(n)
        counts[n] = event.delivery_count
        await asyncio.sleep(0.001)
        overlap[n] = max(overlap[n], running)
        running -= 1

    try:
        await second.subscribe(topic, handle, group=group, concurrency=4)
        begun = asyncio.get_running_loop().time()
        await wait_until(lambda: len(order) >= prefetch, 60, "the careful records")
        careful_s = asyncio.get_running_loop().time() - begun
        await wait_until(lambda: len(order) == total, 30, "every record")
    finally:
        await second.close(timeout=5.0)
    after = (await stored_counts(kafka_bootstrap, group_id, topic))[len(before) :]
    print(
        f"\ncareful replay: {prefetch} records one at a time in {careful_s:.2f} s "
        f"({careful_s / prefetch * 1000:.1f} ms a record), {len(after)} writes"
    )
    assert before == [(0, {0: 1})]  # the first owner counted record 0 and committed nothing
    assert order[:prefetch] == list(range(prefetch))  # in order, and
    assert max(overlap[n] for n in range(prefetch)) == 1  # one at a time
    assert max(overlap[n] for n in range(prefetch, total)) > 1  # then concurrent again
    assert counts == {n: 2 if n == 0 else 1 for n in range(total)}
    # each careful record counted alone before it was handed out; none after the window
    assert after == [(0, {n: counts[n]}) for n in range(prefetch)]
