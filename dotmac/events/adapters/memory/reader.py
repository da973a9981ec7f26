"""Reading the in-process log back (the memory bus's ``_read_log``): no group, no acks.

A position is the log offset as a string. What can be read is what the topic still holds: all
of it with ``enable_persistence``, otherwise the events some group has not acked yet (or, on
a topic without groups, the newest ``max_queue_size``). A reader that falls behind a trim
goes on from the oldest event still held.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import UTC, datetime

from dotmac.events.adapters.memory.log import Topic
from dotmac.events.errors import ConfigurationError
from dotmac.events.transport import LogRecord

__all__ = ["read_log"]

IDLE_TICK = 1.0
"""Seconds a following reader waits for an append before yielding None."""
_HALF_MICROSECOND = 5e-7  # a record's datetime rounds its float time to the microsecond


def _seconds(moment: datetime) -> float:
    """``moment`` as an append time, so that a record's own timestamp matches the record."""
    return moment.timestamp() - _HALF_MICROSECOND


def _offset(name: str, position: str) -> int:
    if not (position.isascii() and position.isdigit()):
        raise ConfigurationError(name, f"{position!r} is not a memory log offset (e.g. '12')")
    return int(position)


def _start(topic: Topic, since: datetime | str | None) -> int:
    """The first offset to read (``since`` already checked)."""
    if since is None:
        return topic.base
    if isinstance(since, datetime):
        lo, hi = topic.base - topic.origin, topic.end - topic.origin
        return topic.origin + bisect.bisect_left(topic.times, _seconds(since), lo, hi)
    if since == "end":
        return topic.end
    return int(since) + 1


async def _appended(topic: Topic, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the next append; False when none came."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    topic.readers.append(waiter)
    try:
        async with asyncio.timeout(timeout):
            await waiter
    except TimeoutError:
        return False
    finally:
        if waiter in topic.readers:
            topic.readers.remove(waiter)
    return True


async def read_log(
    topics: Mapping[str, Topic],
    create: Callable[[str], Topic],
    name: str,
    *,
    since: datetime | str | None,
    until: datetime | str | None,
    follow: bool,
) -> AsyncGenerator[LogRecord | None, None]:
    """The topic's held events from ``since`` (see :class:`~dotmac.events.transport.LogReader`).

    ``create`` makes the topic when a follower starts before anything was published to it.
    """
    if isinstance(since, str) and since != "end":
        _offset("since", since)
    last = None if until is None or isinstance(until, datetime) else _offset("until", until)
    stop_time = _seconds(until) if isinstance(until, datetime) else None
    topic = create(name) if follow else topics.get(name)
    if topic is None:
        return
    offset = _start(topic, since)
    while True:
        offset = max(offset, topic.base)
        while offset < topic.end:  # read afresh after every yield: trims move the list
            if topic.purged and offset in topic.purged:
                offset += 1
                continue
            index = offset - topic.origin
            moment = topic.times[index]
            if (stop_time is not None and moment >= stop_time) or (
                last is not None and offset > last
            ):
                return
            yield LogRecord(
                str(offset),
                topic.data[index],
                timestamp=datetime.fromtimestamp(moment, UTC),
                key=topic.keys[index],
                headers=topic.headers.get(offset, ()),
                offset=offset,
            )
            offset = max(offset + 1, topic.base)
        if not follow:
            return
        if not await _appended(topic, IDLE_TICK):
            yield None
