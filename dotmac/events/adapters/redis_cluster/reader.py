"""Reading a partitioned topic back (the cluster bus's ``_read_log``), outside any group.

Each partition is read with the single-server reader (XRANGE pages; no XREADGROUP, no XACK).
A position is ``"partition:entry-id"`` (``"3:1767225600000-0"``). As ``since`` it starts the
partitions it names after their entries and reads only those (``"0:...,2:..."`` names
several): entries of different partitions have no order between them. As ``until`` it ends the
partitions it names at their entries. Records come in entry-id order across partitions (the
ids start with each master's clock in ms, so this is time order as far as the masters' clocks
agree), and in order within each partition. A follower then polls every partition (an XRANGE
each) every ``poll`` seconds, yielding None after a round that found nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from dotmac.events.adapters.redis.reader import read_stream
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.errors import ConfigurationError
from dotmac.events.transport import LogRecord

__all__ = ["parse_positions", "read_partitions"]

_POSITION = re.compile(r"^(\d+):(\d+-\d+)$")


def parse_positions(name: str, value: str, partitions: int) -> dict[int, str]:
    """``"p:id[,p:id...]"`` as {partition: entry id}."""
    found: dict[int, str] = {}
    for part in value.split(","):
        match = _POSITION.match(part.strip())
        if match is None:
            raise ConfigurationError(
                name, f"{part!r} is not a partition position (e.g. '3:1767225600000-0')"
            )
        partition = int(match[1])
        if partition >= partitions:
            raise ConfigurationError(name, f"the topic has no partition {partition}")
        found[partition] = match[2]
    return found


async def read_partitions(
    client: RedisCluster,
    streams: list[str],
    *,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int | None,
    follow: bool,
    poll: float,
    secrets: tuple[str, ...],
    backoff: ExponentialBackoff,
) -> AsyncGenerator[LogRecord | None, None]:
    """The records of ``streams`` (a topic's partitions, in order); see the module docstring."""
    count = len(streams)
    after = (
        parse_positions("since", since, count) if isinstance(since, str) and since != "end" else {}
    )
    last = parse_positions("until", until, count) if isinstance(until, str) else {}
    bound = until if isinstance(until, datetime) else None
    wanted = sorted(after) if after else list(range(count))
    as_redis = cast(Redis, client)
    cursors: dict[int, datetime | str | None] = {}
    for p in wanted:
        if p in after:
            cursors[p] = after[p]
        elif since == "end":
            cursors[p] = await _tail(as_redis, streams[p])
        else:
            cursors[p] = since
    open_ends = set(wanted)  # partitions still read (not past their until)
    while True:
        found = False
        heads: list[tuple[tuple[int, int], int, LogRecord]] = []
        readers: dict[int, AsyncGenerator[LogRecord | None, None]] = {}
        try:
            for p in wanted:
                if p in open_ends:
                    readers[p] = read_stream(
                        as_redis,
                        streams[p],
                        since=cursors[p],
                        until=last.get(p, bound),
                        limit=limit,
                        follow=False,
                        block_ms=1,
                        secrets=secrets,
                        backoff=backoff,
                    )
                    await _push(heads, p, readers[p])
            while heads:  # the oldest head first: by entry id time across partitions
                _, p, record = heapq.heappop(heads)
                found = True
                cursors[p] = record.position
                if record.position == last.get(p):
                    open_ends.discard(p)
                record.partition = p
                record.position = f"{p}:{record.position}"
                yield record
                await _push(heads, p, readers[p])
        finally:
            for reader in readers.values():
                await reader.aclose()
        if not follow or not open_ends:
            return
        if not found:
            if bound is not None and datetime.now(UTC) >= bound:
                return  # nothing more can come before the bound
            yield None
            await asyncio.sleep(poll)


async def _push(
    heads: list[tuple[tuple[int, int], int, LogRecord]],
    partition: int,
    reader: AsyncGenerator[LogRecord | None, None],
) -> None:
    """Put ``reader``'s next record on the heap, keyed by its entry id."""
    async for record in reader:
        if record is not None:
            ms, _, seq = record.position.partition("-")
            heapq.heappush(heads, ((int(ms), int(seq)), partition, record))
            return


async def _tail(client: Redis, stream: str) -> str:
    """The id of ``stream``'s last entry now ("0-0" when empty)."""
    last = await client.xrevrange(stream, max="+", min="-", count=1)
    if not last:
        return "0-0"
    entry_id = last[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
