"""Reading a topic back (the Kafka bus's ``_read_log``): a consumer without a group, assigned
by hand, so no group is joined, rebalanced or committed to.

A position is ``"partition:offset"``. As ``since`` it starts that partition after the offset
and reads only the partitions it names (``"0:12,2:40"`` names several): records of different
partitions have no order between them, so "after 0:12" says nothing about partition 1. As
``until`` it ends the partitions it names after that offset. A datetime becomes an offset per
partition through ListOffsets (``offsets_for_times``): the first record whose timestamp is at
or after it. Records come in order within each partition; partitions interleave as their
fetches arrive. Without ``follow`` each partition is read up to its end offset taken when the
read began.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from dotmac.events.adapters.kafka.bootstrap import start_client
from dotmac.events.adapters.kafka.errors import kafka_errors
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.errors import ConfigurationError
from dotmac.events.transport import LogRecord

__all__ = ["read_topic"]

logger = logging.getLogger("dotmac.events.kafka")

_POSITION = re.compile(r"^(\d+):(\d+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IDLE_MS = 1000  # how long one fetch waits before a follower is told nothing came


def _positions(name: str, value: str) -> dict[int, int]:
    """``"p:o[,p:o...]"`` as {partition: offset}."""
    found: dict[int, int] = {}
    for part in value.split(","):
        match = _POSITION.match(part.strip())
        if match is None:
            raise ConfigurationError(
                name, f"{value!r} is not a Kafka position 'partition:offset' (e.g. '0:12')"
            )
        found[int(match[1])] = int(match[2])
    return found


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _record(record: Any) -> LogRecord:
    key = None if record.key is None else bytes(record.key).decode(errors="replace")
    stamp = record.timestamp
    return LogRecord(
        f"{record.partition}:{record.offset}",
        bytes(record.value or b""),
        timestamp=None if stamp is None or stamp < 0 else _EPOCH + timedelta(milliseconds=stamp),
        key=key,
        headers=[(name, bytes(value or b"")) for name, value in record.headers or ()],
        partition=record.partition,
        offset=record.offset,
    )


async def _at_times(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], moment: datetime
) -> dict[TopicPartition, int | None]:
    """Per partition the first offset stored at or after ``moment``; None when there is none
    (Tansu answers offset 0 with timestamp -1 for that, Kafka answers nothing)."""
    found = await consumer.offsets_for_times({tp: _ms(moment) for tp in tps})
    return {
        tp: None if hit is None or hit.timestamp is None or hit.timestamp < 0 else hit.offset
        for tp, hit in found.items()
    }


async def read_topic(
    config: KafkaConfig,
    topic: str,
    ensure_topic: Callable[[str], Awaitable[int]],
    *,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int | None,
    follow: bool,
) -> AsyncGenerator[LogRecord | None, None]:
    """``topic``'s records from ``since`` (see :class:`~dotmac.events.transport.LogReader`).

    ``ensure_topic`` creates the topic for a follower that starts before it exists.
    """
    after = _positions("since", since) if isinstance(since, str) and since != "end" else None
    last = _positions("until", until) if isinstance(until, str) else None
    consumer = AIOKafkaConsumer(**config.consumer_kwargs(group=None, private=True))
    with kafka_errors(f"reader start on {topic!r}"):
        await start_client(consumer, config)
    try:
        with kafka_errors(f"read of {topic!r}"):
            if follow:
                count = await ensure_topic(topic)
            elif topic in await consumer.topics():
                count = len(consumer.partitions_for_topic(topic) or ())
            else:
                count = 0
            partitions = list(range(count))
            if after is not None:
                missing = sorted(set(after) - set(partitions))
                if missing:
                    raise ConfigurationError(
                        "since", f"topic {topic!r} has no partition {missing[0]}"
                    )
                partitions = sorted(after)
            tps = [TopicPartition(topic, p) for p in partitions]
            if not tps:
                return
            bounds = await _bounds(consumer, tps, since, after, until, last, follow)
        active = {tp for tp, (start, stop, _) in bounds.items() if stop is None or start < stop}
        consumer.assign(sorted(active, key=lambda tp: tp.partition))
        for tp in active:
            consumer.seek(tp, bounds[tp][0])
        stop_time = _ms(until) if isinstance(until, datetime) and follow else None
        batch_size = min(limit or config.max_poll_records, config.max_poll_records)
        # Without follow an empty fetch only needs to be one the broker answered: it waits
        # fetch_max_wait_ms for data before it answers nothing.
        wait_ms = _IDLE_MS if follow else config.fetch_max_wait_ms + 100
        while active:
            with kafka_errors(f"fetch from {topic!r}"):
                batch = await consumer.getmany(*active, timeout_ms=wait_ms, max_records=batch_size)
                if not batch:
                    await _finish_passed(consumer, active, bounds)
            if not batch:
                if follow and active:
                    yield None
                continue
            for tp, records in batch.items():
                stop = bounds[tp][1]
                for record in records:
                    stamp = record.timestamp
                    if (stop is not None and record.offset >= stop) or (
                        stop_time is not None and stamp is not None and stamp >= stop_time
                    ):
                        _finish(consumer, active, tp)
                        break
                    yield _record(record)
                    if stop is not None and record.offset + 1 >= stop:
                        _finish(consumer, active, tp)
                        break
    finally:
        try:
            await consumer.stop()
        except Exception as exc:  # the read itself is over; only the socket is left
            logger.debug("kafka reader on %s: stop failed: %r", topic, exc)


async def _bounds(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    since: datetime | str | None,
    after: dict[int, int] | None,
    until: datetime | str | None,
    last: dict[int, int] | None,
    follow: bool,
) -> dict[TopicPartition, tuple[int, int | None, int | None]]:
    """Per partition: the first offset to read; the offset ``until`` stops before (None: no
    bound); without ``follow`` the end offset when the read began. The end is not a stop:
    some brokers (Tansu) report it short of the last record of a multi-record batch, so a
    partition ends when a fetch brings nothing and its position has reached it."""
    firsts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    starts: dict[TopicPartition, int] = dict(firsts)
    if since == "end":
        starts = dict(ends)
    elif isinstance(since, datetime):
        at = await _at_times(consumer, tps, since)
        starts = {tp: ends[tp] if (hit := at[tp]) is None else hit for tp in tps}
    elif after is not None:
        starts = {tp: max(after[tp.partition] + 1, firsts[tp]) for tp in tps}
    stops: dict[TopicPartition, int | None] = dict.fromkeys(tps)
    if isinstance(until, datetime) and not follow:
        stops = dict(await _at_times(consumer, tps, until))
    for tp in tps:
        if last is not None and tp.partition in last:
            stop, bound = stops[tp], last[tp.partition] + 1
            stops[tp] = bound if stop is None else min(stop, bound)
    return {tp: (starts[tp], stops[tp], None if follow else ends[tp]) for tp in tps}


def _finish(consumer: AIOKafkaConsumer, active: set[TopicPartition], tp: TopicPartition) -> None:
    active.discard(tp)
    consumer.pause(tp)


async def _finish_passed(
    consumer: AIOKafkaConsumer,
    active: set[TopicPartition],
    bounds: dict[TopicPartition, tuple[int, int | None, int | None]],
) -> None:
    """After a fetch that brought nothing: partitions whose position reached their end (or,
    when following, their stop: the last offsets may be transaction markers) are done."""
    for tp in list(active):
        _, stop, end = bounds[tp]
        limit = stop if end is None else end  # without follow, stops finish on records
        if limit is not None and await consumer.position(tp) >= limit:
            _finish(consumer, active, tp)
