"""Delayed delivery on Kafka: cascading tier topics and the mover that forwards their records.

Kafka cannot hold a record back, so a delayed event waits in one of a few internal tier
topics, ``{delay_topic_prefix}{seconds}`` for each of ``KafkaConfig.delay_tiers`` (by default
1, 5, 30, 300 and 3600 s). ``_schedule`` writes it to the largest tier not above its remaining
delay (the smallest when less remains), with its key (so a key keeps one partition number in
every tier) and with its ``_send`` headers followed by four of ours: the due time and the
target topic, the release time ``min(entered + tier, due)`` and the publish order (publisher
clock in ns, index in the call).

A mover (:class:`DelayMover`) in each bus that delays events or subscribes consumes every tier
topic in the group ``delay_group`` and keeps what it fetched in memory, uncommitted, until its
release time. A released record goes to its target when due (the value, the key and the
``_send`` headers exactly as published), is kept in memory until due when less than the
smallest tier remains, and otherwise goes to the tier for what remains. A partition's offset
is committed only up to the first record not yet forwarded, after the forward was
acknowledged; so the broker holds every event until it is in its topic, and a mover that dies
leaves its partitions to the next (at-least-once: a crash may forward a record twice).

Why in memory rather than seek back and pause at the head: within a tier release times follow
the order records entered (``entered + tier``), except in the smallest tier, where an event
due sooner than ``entered + tier`` sits behind earlier ones; holding each fetched record
releases it on time anyway, and a record already in memory needs no new fetch at its release.
A partition holding ``HOLD_LIMIT`` records is paused until some are forwarded.

Precision: never early (the mover forwards only when ``due <= now`` on its clock: hosts need
synchronised clocks). Late by the mover's fetch latency when it keeps up (a record that enters
its last tier shortly before due must still be fetched; on brokers that do not wake a waiting
fetch that is ``fetch_max_wait_ms``), by at most the smallest tier when a partition holds
``HOLD_LIMIT`` records, and, after every mover stopped, by the time until one runs again.

Ordering: each round forwards every released record in (due, publish order). An event reaches
its target from wherever it waits at the first round at or after its due time, and the mover
holds an event in memory from at least the smallest tier before it is due (it enters its last
tier earlier still, or was published into the smallest tier after the events it must follow),
so events due at the same time are forwarded together, in publish order. With the same key
they share one partition number in every tier and the range assignor gives that number of
every tier to one mover: same-key events keep publish order for equal due times, and due order
otherwise, while the group is stable and movers keep up (tier topics must have equal
partition counts; the bus creates them so). Keyless events, like keyless publishes, have none.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from dotmac.events.adapters.kafka.bootstrap import start_client
from dotmac.events.adapters.kafka.errors import kafka_errors
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.backoff import ExponentialBackoff

__all__ = [
    "DUE_HEADER",
    "HOLD_LIMIT",
    "ORDER_HEADER",
    "RELEASE_HEADER",
    "TOPIC_HEADER",
    "DelayMover",
    "pick_tier",
    "tier_records",
]

logger = logging.getLogger("dotmac.events.kafka")

Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers

DUE_HEADER = "dotmac-delay-due"
TOPIC_HEADER = "dotmac-delay-topic"
RELEASE_HEADER = "dotmac-delay-release"
ORDER_HEADER = "dotmac-delay-order"
_OURS = frozenset((DUE_HEADER, TOPIC_HEADER, RELEASE_HEADER, ORDER_HEADER))

HOLD_LIMIT = 1000
"""Records a mover keeps in memory per tier partition before it pauses that partition."""

_POLL = 1.0  # seconds one fetch waits at most when nothing is held
_ERROR_BACKOFF = ExponentialBackoff(base_ms=100, max_ms=5_000)


def pick_tier(tiers: Sequence[float], remaining: float) -> float:
    """The largest tier not above ``remaining`` seconds, or the smallest tier."""
    chosen = tiers[0]
    for tier in tiers:
        if tier <= remaining:
            chosen = tier
    return chosen


def _tier_headers(
    headers: list[tuple[str, bytes]], topic: str, due: float, release: float, order: bytes
) -> list[tuple[str, bytes]]:
    return [
        *headers,
        (DUE_HEADER, repr(due).encode()),
        (TOPIC_HEADER, topic.encode()),
        (RELEASE_HEADER, repr(release).encode()),
        (ORDER_HEADER, order),
    ]


def tier_records(
    config: KafkaConfig,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
    due: float,
    now: float,
) -> list[Record]:
    """The tier-topic records holding ``(key, value, headers)`` for ``topic`` until ``due``."""
    tier = pick_tier(config.delay_tiers, due - now)
    name = config.delay_topic(tier)
    release = min(now + tier, due)
    stamp = time.time_ns()
    return [
        (name, key, value, _tier_headers(headers, topic, due, release, b"%d:%d" % (stamp, i)))
        for i, (key, value, headers) in enumerate(records)
    ]


class _Held:
    """A fetched tier record not yet forwarded."""

    __slots__ = ("due", "failures", "headers", "key", "order", "release", "target", "value")

    def __init__(
        self,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        target: str,
        due: float,
        release: float,
        order: tuple[int, int],
    ) -> None:
        self.key = key
        self.value = value
        self.headers = headers
        self.target = target
        self.due = due
        self.release = release
        self.order = order
        self.failures = 0


def _parse(record: Any) -> _Held:
    """A tier record's parts; ValueError when it lacks our headers."""
    ours: dict[str, bytes] = {}
    headers: list[tuple[str, bytes]] = []
    for name, value in record.headers or ():
        if name in _OURS:
            ours[name] = bytes(value)
        else:
            headers.append((name, bytes(value)))
    if len(ours) != len(_OURS):
        raise ValueError(f"missing {sorted(_OURS - set(ours))}")
    stamp, _, index = ours[ORDER_HEADER].partition(b":")
    return _Held(
        None if record.key is None else bytes(record.key),
        bytes(record.value or b""),
        headers,
        ours[TOPIC_HEADER].decode(),
        float(ours[DUE_HEADER]),
        float(ours[RELEASE_HEADER]),
        (int(stamp), int(index)),
    )


class _Partition:
    """One assigned tier partition: what was fetched and not yet forwarded, by offset."""

    __slots__ = ("committed", "fetched", "held", "paused", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.held: dict[int, _Held] = {}  # insertion order is offset order
        self.fetched: int | None = None  # the offset after the last one fetched
        self.committed: int | None = None
        self.paused = False

    def position(self) -> int | None:
        """Where a new owner must start: the first offset not forwarded yet."""
        return next(iter(self.held), self.fetched)


class DelayMover:
    """Forwards tier records when due until stopped; see the module docstring.

    ``send`` produces records (creating topics, resending like ``publish``), ``ensure_topic``
    creates a topic, ``report`` hears every failure.
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        send: Callable[[list[Record]], Awaitable[None]],
        ensure_topic: Callable[[str], Awaitable[int]],
        report: Callable[[str, BaseException], None],
    ) -> None:
        self._config = config
        self._tiers = config.delay_tiers
        self._topics = config.delay_topics()
        self._send = send
        self._ensure_topic = ensure_topic
        self._report = report
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._heap: list[tuple[float, int, _Partition, int]] = []
        self._counter = itertools.count()
        self._round = asyncio.Lock()  # a round's produce and commit vs. a rebalance or stop
        self._task: asyncio.Task[None] | None = None
        # Set while no consumer start is in flight: cancelling one can leak its connection.
        self._settled = asyncio.Event()
        self._settled.set()

    def start(self) -> None:
        """Run the mover (once): create the tier topics, join the group, forward."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dotmac-kafka-delay-mover")

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self._consumer is None:
                    self._settled.clear()
                    try:
                        await self._join()
                    finally:
                        self._settled.set()
                await self._step()
                failures = 0
            except Exception as exc:  # broker away: records wait in the tiers, nothing is lost
                failures += 1
                self._tell("delay mover", exc, f"attempt {failures}")
                await asyncio.sleep(_ERROR_BACKOFF.delay(failures))

    def _tell(self, where: str, error: BaseException, detail: str = "") -> None:
        """Log and report a failure; an observer that raises must not stop the mover."""
        logger.warning("kafka %s: %r %s", where, error, detail)
        try:
            self._report(where, error)
        except Exception as exc:
            logger.error("kafka %s: the observer failed on error(): %r", where, exc)

    async def _join(self) -> None:
        for topic in self._topics:  # equal partition counts keep a key on one partition number
            await self._ensure_topic(topic)
        options = self._config.consumer_kwargs(group=self._config.delay_group, private=False)
        options["auto_offset_reset"] = "earliest"  # a new group must forward what is waiting
        options["partition_assignment_strategy"] = (RangePartitionAssignor,)
        consumer = AIOKafkaConsumer(**options)
        with kafka_errors("delay mover start"):
            try:
                await start_client(consumer, self._config)
                consumer.subscribe(self._topics, listener=_Listener(self))
            except BaseException:
                await consumer.stop()
                raise
        self._consumer = consumer

    async def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        wait = _POLL
        while self._heap:
            release, _, part, offset = self._heap[0]
            if self._live(part, offset, release):
                wait = min(max(release - time.time(), 0.0), _POLL)
                break
            heapq.heappop(self._heap)
        with kafka_errors("delay mover fetch"):
            fetched = await consumer.getmany(
                timeout_ms=math.ceil(wait * 1000), max_records=self._config.max_poll_records
            )
        self._take(fetched)
        async with self._round:
            await self._forward(time.time())
            await self._commit(list(self._parts.values()))

    def _live(self, part: _Partition, offset: int, release: float) -> bool:
        held = part.held.get(offset)
        return held is not None and held.release == release and self._parts.get(part.tp) is part

    def _take(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        for tp, batch in fetched.items():
            part = self._parts.get(tp)
            if part is None:
                continue  # revoked meanwhile: the next owner reads it from the commit
            for record in batch:
                part.fetched = record.offset + 1
                try:
                    held = _parse(record)
                except ValueError as exc:  # not ours: nothing says where it should go
                    error = ValueError(
                        f"{tp.topic}:{tp.partition}:{record.offset} is not a delayed event "
                        f"({exc}); skipped"
                    )
                    self._tell("delay mover", error)
                    continue
                part.held[record.offset] = held
                self._push(part, record.offset, held.release)
            if len(part.held) >= HOLD_LIMIT and not part.paused and self._consumer is not None:
                part.paused = True
                self._consumer.pause(tp)

    def _push(self, part: _Partition, offset: int, release: float) -> None:
        heapq.heappush(self._heap, (release, next(self._counter), part, offset))

    async def _forward(self, now: float) -> None:
        """One round: every held record released by ``now`` goes to its target, to the next
        tier, or (less than the smallest tier from due) stays held until due."""
        released: list[tuple[_Partition, int, _Held]] = []
        while self._heap and self._heap[0][0] <= now:
            release, _, part, offset = heapq.heappop(self._heap)
            if not self._live(part, offset, release):
                continue
            held = part.held[offset]
            if held.due > now and held.due - now < self._tiers[0]:
                held.release = held.due  # due before any tier would release it
                self._push(part, offset, held.due)
            else:
                released.append((part, offset, held))
        if not released:
            return
        released.sort(key=lambda item: (item[2].due, item[2].order))
        # One send per destination topic, so a topic that refuses records (deleted, too
        # small a max message size) holds back only its own; order matters within a topic.
        groups: dict[str, list[tuple[_Partition, int, _Held, Record]]] = {}
        for part, offset, held in released:
            if held.due <= now:
                record: Record = (held.target, held.key, held.value, held.headers)
            else:
                tier = pick_tier(self._tiers, held.due - now)
                order = b"%d:%d" % held.order
                headers = _tier_headers(held.headers, held.target, held.due, now + tier, order)
                record = (self._config.delay_topic(tier), held.key, held.value, headers)
            groups.setdefault(record[0], []).append((part, offset, held, record))
        outcomes = await asyncio.gather(
            *(self._send([item[3] for item in group]) for group in groups.values()),
            return_exceptions=True,
        )
        for (topic, group), outcome in zip(groups.items(), outcomes, strict=True):
            if outcome is None:
                for part, offset, _, _ in group:
                    part.held.pop(offset, None)
                continue
            if not isinstance(outcome, Exception):
                raise outcome  # cancelled: stopping
            self._tell("delay mover forward", outcome, f"to {topic!r}")
            for part, offset, held, _ in group:  # held; tried again after a backoff
                held.failures += 1
                held.release = now + _ERROR_BACKOFF.delay(held.failures)
                self._push(part, offset, held.release)

    async def _commit(self, parts: Sequence[_Partition]) -> None:
        consumer = self._consumer
        offsets: dict[TopicPartition, int] = {}
        for part in parts:
            position = part.position()
            if position is not None and position != part.committed:
                offsets[part.tp] = position
        if offsets and consumer is not None:
            try:
                with kafka_errors("delay mover commit"):
                    await consumer.commit(offsets)
            except Exception as exc:
                if isinstance(exc.__cause__, kafka.CommitFailedError | kafka.IllegalStateError):
                    # rebalancing: the new owner starts at the last commit and forwards again
                    logger.debug("kafka delay mover commit deferred by a rebalance: %r", exc)
                    return
                raise
            for part in parts:
                if part.tp in offsets:
                    part.committed = offsets[part.tp]
        for part in parts:
            if part.paused and len(part.held) < HOLD_LIMIT and self._parts.get(part.tp) is part:
                part.paused = False
                if consumer is not None:
                    consumer.resume(part.tp)

    # --- rebalances ------------------------------------------------------------------------------

    def _assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = _Partition(tp)

    async def _revoked(self, revoked: Iterable[TopicPartition]) -> None:
        parts = [part for tp in revoked if (part := self._parts.get(tp)) is not None]
        try:
            async with asyncio.timeout(self._config.revoke_timeout_ms / 1000):
                async with self._round:  # let a round in progress finish and commit
                    await self._commit(parts)
        except Exception as exc:  # the next owner forwards from the last commit
            logger.debug("kafka delay mover commit on revoke failed: %r", exc)
        for part in parts:
            self._parts.pop(part.tp, None)
        self._heap = [entry for entry in self._heap if self._parts.get(entry[2].tp) is entry[2]]
        heapq.heapify(self._heap)

    # --- stopping --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop between rounds (waiting up to ``close_timeout`` for one in progress), leave
        the group. What is held stays in the tiers for the group's other movers."""
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(self._config.close_timeout):
                    await self._settled.wait()  # a consumer start finishes, then stops cleanly
                    async with self._round:
                        task.cancel()
            except TimeoutError:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:  # rounds commit as they go; this catches a commit a rebalance deferred
            await self._commit(list(self._parts.values()))
        except Exception as exc:
            logger.debug("kafka delay mover final commit failed: %r", exc)
        consumer, self._consumer = self._consumer, None
        self._parts.clear()
        self._heap.clear()
        if consumer is not None:
            with kafka_errors("delay mover stop"):
                await consumer.stop()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, mover: DelayMover) -> None:
        self._mover = mover

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._mover._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._mover._assigned(assigned)
