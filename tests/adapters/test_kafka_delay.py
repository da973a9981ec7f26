"""Delayed delivery on Kafka: tier topics and movers (``adapters/kafka/delay.py``) on a real broker.

Each test has its own tier topics and mover group (``delay_topic_prefix``, ``delay_group``), so
movers of other tests never take its partitions. "Never early" is checked on the broker's
record timestamps at the target (set by the mover's producer when it forwarded the record),
which a late reader cannot hide; lateness is measured where users see it, in the handler.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from dotmac.events import Event, KafkaConfig
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.adapters.kafka.bus import kafka_headers
from dotmac.events.adapters.kafka.delay import (
    DUE_HEADER,
    ORDER_HEADER,
    RELEASE_HEADER,
    TOPIC_HEADER,
    pick_tier,
    tier_records,
)
from dotmac.events.errors import ConfigurationError
from dotmac.events.observability.observer import NoopObserver
from dotmac.events.testing.conformance import wait_until
from tests.support.kafka_helpers import kafka_test_config, unique_topic

ROOT = Path(__file__).resolve().parents[2]
EARLY_TOLERANCE = 0.002  # record timestamps are whole milliseconds, rounded down
SMALLEST_TIER = 1.0  # the default delay_tiers' smallest: the documented bound on lateness


def _config(bootstrap: str, tag: str, **overrides: Any) -> KafkaConfig:
    return kafka_test_config(
        bootstrap,
        delay_topic_prefix=f"_test-{tag}.delay.",
        delay_group=f"movers-{tag}",
        pattern_refresh=0.5,
        **overrides,
    )


def _tag() -> str:
    return uuid.uuid4().hex[:10]


async def _read_target(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    """Every record of ``topic`` (3 partitions), read raw, once ``count`` are there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=30)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=200)
            for batch in fetched.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def _assert_never_early(records: list[Any], due: dict[int, float]) -> None:
    for record in records:
        ident = json.loads(record.value)["payload"]["id"]
        forwarded = record.timestamp / 1000
        assert forwarded >= due[ident] - EARLY_TOLERANCE, (
            f"event {ident} forwarded {due[ident] - forwarded:.3f}s before it was due"
        )


def _lateness_table(lateness: dict[str, list[float]]) -> str:
    rows = [
        f"  {label:>6}: n={len(values)} min={min(values) * 1000:.0f} ms "
        f"median={statistics.median(values) * 1000:.0f} ms max={max(values) * 1000:.0f} ms"
        for label, values in lateness.items()
    ]
    return "\n".join(rows)


class _Errors(NoopObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, BaseException]] = []

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        self.seen.append((topic, where, error))


# --- without a broker ------------------------------------------------------------------------


def test_delay_settings_are_checked_and_name_the_field() -> None:
    config = KafkaConfig(delay_tiers=[0.5, 2, 3600.0])
    assert config.delay_tiers == (0.5, 2, 3600.0)
    assert config.delay_topics() == ["_dotmac.delay.0.5", "_dotmac.delay.2", "_dotmac.delay.3600"]
    assert KafkaConfig().delay_topics()[0] == "_dotmac.delay.1"
    bad: list[tuple[str, dict[str, Any]]] = [
        ("delay_tiers", {"delay_tiers": ()}),
        ("delay_tiers", {"delay_tiers": (5, 1)}),
        ("delay_tiers", {"delay_tiers": (1, 1)}),
        ("delay_tiers", {"delay_tiers": (0.05,)}),
        ("delay_tiers", {"delay_tiers": (1, float("inf"))}),
        ("delay_tiers", {"delay_tiers": (True,)}),
        ("delay_tiers", {"delay_tiers": "1,5"}),
        ("delay_topic_prefix", {"delay_topic_prefix": "delay."}),  # would match patterns
        ("delay_topic_prefix", {"delay_topic_prefix": "_delay/"}),
        ("delay_group", {"delay_group": ""}),
        ("delay_group", {"delay_group": "movers of mine"}),
        ("delay_mover", {"delay_mover": "yes"}),
    ]
    for field, kwargs in bad:
        with pytest.raises(ConfigurationError) as caught:
            KafkaConfig(**kwargs)
        assert caught.value.field == field, kwargs


def test_tier_choice_and_tier_records() -> None:
    tiers = (1, 5, 30, 300, 3600)
    assert [pick_tier(tiers, r) for r in (0.2, 1, 4.99, 5, 29, 31, 7200)] == [
        1,
        1,
        1,
        5,
        5,
        30,
        3600,
    ]
    config = KafkaConfig()
    now = 1_000_000.0
    held = [(b"k", b"v1", [("h", b"1")]), (None, b"v2", [])]
    records = tier_records(config, "orders", held, now + 7, now)
    assert [r[0] for r in records] == ["_dotmac.delay.5", "_dotmac.delay.5"]
    _, key, value, headers = records[0]
    assert (key, value, headers[0]) == (b"k", b"v1", ("h", b"1"))
    ours = dict(headers[1:])
    assert float(ours[DUE_HEADER]) == now + 7
    assert ours[TOPIC_HEADER] == b"orders"
    assert float(ours[RELEASE_HEADER]) == now + 5  # entered + tier
    first, second = ours[ORDER_HEADER], dict(records[1][3])[ORDER_HEADER]
    assert first.split(b":")[0] == second.split(b":")[0] and first < second
    # less than the smallest tier left: released when due, not a whole tier later
    (short,) = tier_records(config, "orders", [(None, b"v", [])], now + 0.3, now)
    assert short[0] == "_dotmac.delay.1"
    assert float(dict(short[3])[RELEASE_HEADER]) == now + 0.3


# --- on the broker -----------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_delayed_events_arrive_when_due_never_early_with_keys_and_headers(
    kafka_bootstrap: str,
) -> None:
    bus = create_kafka_bus(_config(kafka_bootstrap, _tag()))
    topic = unique_topic("delay")
    arrived: dict[int, tuple[float, Event]] = {}

    async def handler(event: Event) -> None:
        arrived.setdefault(event.payload["id"], (time.time(), event))

    try:
        await bus.subscribe(topic, handler, group="g")
        # The mover joined its group beside the subscription; the first event is measured apart.
        started = time.time()
        await bus.publish(Event(topic, {"id": 0}), delay=0.1)
        await wait_until(lambda: 0 in arrived, 30, "the first delayed event")
        first_late = arrived[0][0] - started - 0.1
        due: dict[int, float] = {0: started + 0.1}
        labels: dict[int, str] = {}
        events: dict[int, Event] = {}
        ident = 1
        for _ in range(3):
            for label, delay in (("0.5 s", 0.5), ("2 s", 2.0), ("7 s", 7.0), ("at=", 3.3)):
                event = Event(
                    topic,
                    {"id": ident},
                    key=f"key-{ident}",
                    headers={"trace": f"t{ident}", "kind": label},
                )
                started = time.time()
                if label == "at=":
                    when = datetime.fromtimestamp(started + delay, UTC)
                    await bus.publish(event, at=when)
                    due[ident] = when.timestamp()
                else:
                    await bus.publish(event, delay=delay)
                    due[ident] = started + delay
                labels[ident], events[ident] = label, event
                ident += 1
            await asyncio.sleep(0.13)  # spread the publishes over the tiers' release times
        await wait_until(lambda: len(arrived) == ident, 30, "every delayed event")
        lateness: dict[str, list[float]] = {}
        for n, label in labels.items():
            at, got = arrived[n]
            assert at >= due[n] - EARLY_TOLERANCE, f"event {n} ({label}) handled early"
            lateness.setdefault(label, []).append(at - due[n])
            sent = events[n]
            assert (got.key, got.headers, got.id, got.topic) == (
                sent.key,
                sent.headers,
                sent.id,
                sent.topic,
            )
        records = await _read_target(kafka_bootstrap, topic, ident)
        assert len(records) == ident
        _assert_never_early(records, due)
        for record in records:  # exactly a publish's record: no delay header left behind
            ident_of = json.loads(record.value)["payload"]["id"]
            if ident_of in events:
                expected = kafka_headers(events[ident_of])
                assert [(k, bytes(v)) for k, v in record.headers] == expected
                assert record.key == events[ident_of].key.encode()  # type: ignore[union-attr]
        # the tier topics are internal: no pattern subscription or listing by pattern sees them
        prefix = bus.config.delay_topic_prefix
        assert [name for name in await bus.topics() if name.startswith(prefix)]
        assert not [name for name in await bus.topics("**") if name.startswith(prefix)]
    finally:
        await bus.close()
    worst = max(max(values) for values in lateness.values())
    print(
        f"\nkafka delay lateness (handler time - due), first event {first_late:.3f}s:\n"
        + _lateness_table(lateness)
    )
    assert worst < SMALLEST_TIER, f"an event was {worst:.3f}s late"


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_equal_due_same_key_events_keep_publish_order_across_tiers(
    kafka_bootstrap: str,
) -> None:
    """The first event waits in the 5 s tier, the rest (published 60 ms later, so less than
    5 s remains) in the 1 s tier: they meet again only at their target."""
    bus = create_kafka_bus(_config(kafka_bootstrap, _tag()))
    topic = unique_topic("delay-order")
    order: list[int] = []

    async def handler(event: Event) -> None:
        order.append(event.payload["n"])

    try:
        await bus.subscribe(topic, handler, group="g")
        await bus.publish(Event(topic, {"n": -1}), delay=0.1)  # start the mover
        await wait_until(lambda: order == [-1], 30, "the warm-up event")
        order.clear()
        when = datetime.fromtimestamp(time.time() + 5.02, UTC)
        await bus.publish(Event(topic, {"n": 0}, key="same"), at=when)
        await asyncio.sleep(0.06)
        for n in range(1, 6):
            await bus.publish(Event(topic, {"n": n}, key="same"), at=when)
        await wait_until(lambda: len(order) == 6, 20, "six events")
        assert time.time() >= when.timestamp()
        assert order == [0, 1, 2, 3, 4, 5]
    finally:
        await bus.close()


async def _spawn(mode: str, config: KafkaConfig, topic: str, spec: str, out: Path) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.adapters.kafka_delay_proc",
        mode,
        config.bootstrap_list()[0],
        config.delay_topic_prefix,
        config.delay_group,
        topic,
        spec,
        str(out),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _kill(process: Any) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_events_outlive_their_publisher_process(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = _config(kafka_bootstrap, _tag())
    topic = unique_topic("delay-orphan")
    out = tmp_path / "publisher.txt"
    spec = [{"id": n, "key": f"k{n % 3}", "delay": 2.0 + (n % 4)} for n in range(12)]
    started = time.time()
    publisher = await _spawn("publish", config, topic, json.dumps(spec), out)
    try:
        await wait_until(lambda: "published" in _lines(out), 30, "the publisher to publish")
        await _kill(publisher)  # its mover dies with it, whatever it held
        published = time.time()
    finally:
        await _kill(publisher)
    assert publisher.returncode == -signal.SIGKILL
    # A fresh bus in another process (this one) that only consumes: its mover delivers them.
    bus = create_kafka_bus(config)
    arrived: dict[int, float] = {}

    async def handler(event: Event) -> None:
        arrived.setdefault(event.payload["id"], time.time())

    try:
        await bus.subscribe(topic, handler, group="g")
        await wait_until(lambda: len(arrived) == len(spec), 40, "every orphaned event")
    finally:
        await bus.close()
    # Due times as the publisher computed them lie between its start and its last publish.
    earliest_due = {item["id"]: started + item["delay"] for item in spec}
    latest_due = {item["id"]: published + item["delay"] for item in spec}
    for ident, at in arrived.items():
        assert at >= earliest_due[ident], f"event {ident} arrived early"
    records = await _read_target(kafka_bootstrap, topic, len(spec))
    _assert_never_early(records, earliest_due)
    late = [at - latest_due[ident] for ident, at in arrived.items()]
    print(f"\nkafka delay, publisher killed: {len(spec)} events, latest {max(late):.2f}s late")


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_mover_killed_mid_run_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = _tag()
    # This process publishes and consumes but moves nothing until the victim is dead.
    publisher = create_kafka_bus(_config(kafka_bootstrap, tag, delay_mover=False))
    config = _config(kafka_bootstrap, tag)
    topic = unique_topic("delay-mover")
    out = tmp_path / "mover.txt"
    arrived: Counter[int] = Counter()
    first_at: dict[int, float] = {}

    async def handler(event: Event) -> None:
        arrived[event.payload["id"]] += 1
        first_at.setdefault(event.payload["id"], time.time())

    victim = await _spawn("move", config, unique_topic("idle"), "-", out)
    survivor = None
    try:
        await publisher.subscribe(topic, handler, group="g")
        await publisher.publish(Event(topic, {"id": -1}), delay=0.2)  # makes the tier topics
        await wait_until(lambda: "ready" in _lines(out), 30, "the victim mover to start")
        await wait_until(lambda: -1 in arrived, 30, "the victim to move the first event")
        due: dict[int, float] = {-1: 0.0}
        for n in range(40):
            delay = 0.5 + (n % 10) * 0.8  # 0.5 s .. 7.7 s: across the 1 s and 5 s tiers
            due[n] = time.time() + delay
            await publisher.publish(Event(topic, {"id": n}, key=f"k{n % 7}"), delay=delay)
        await wait_until(lambda: len(arrived) >= 12, 20, "the victim to move some events")
        await _kill(victim)
        moved_by_victim = len(arrived) - 1
        assert moved_by_victim < 40, "the victim finished before it was killed"
        survivor = create_kafka_bus(config)

        async def idle(event: Event) -> None:
            return None

        await survivor.subscribe(unique_topic("idle"), idle, group="idle")  # runs its mover
        await wait_until(lambda: len(arrived) == 41, 60, "the survivor to move the rest")
    finally:
        await _kill(victim)
        if survivor is not None:
            await survivor.close()
        await publisher.close()
    assert victim.returncode == -signal.SIGKILL
    records = await _read_target(kafka_bootstrap, topic, sum(arrived.values()))
    _assert_never_early(records, due)
    twice = sum(1 for count in arrived.values() if count > 1)
    print(
        f"\nkafka delay, mover killed: victim moved {moved_by_victim} of 40, survivor the rest, "
        f"forwarded twice {twice}, lost {41 - len(arrived)}"
    )
    assert set(arrived) == set(due)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_foreign_record_in_a_tier_is_reported_and_skipped(kafka_bootstrap: str) -> None:
    errors = _Errors()
    config = _config(kafka_bootstrap, _tag())
    bus = create_kafka_bus(config, observer=errors)
    topic = unique_topic("delay-foreign")
    arrived: list[int] = []

    async def handler(event: Event) -> None:
        arrived.append(event.payload["id"])

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await bus.subscribe(topic, handler, group="g")
        await bus.publish(Event(topic, {"id": 1}), delay=0.3)
        await wait_until(lambda: arrived == [1], 30, "the first delayed event")
        tier = config.delay_topics()[0]
        await producer.send_and_wait(tier, b"not ours", key=b"x")
        await bus.publish(Event(topic, {"id": 2}, key="x"), delay=0.3)
        await wait_until(lambda: arrived == [1, 2], 10, "the event behind the foreign record")
        await wait_until(lambda: bool(errors.seen), 5, "the foreign record to be reported")
    finally:
        await producer.stop()
        await bus.close()
    where, reported = errors.seen[0][1], errors.seen[0][2]
    assert errors.seen[0][0] == config.delay_topic_prefix
    assert where == "delay mover" and "not a delayed event" in str(reported)
