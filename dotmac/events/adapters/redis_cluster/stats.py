"""Backlog figures of a partitioned topic: per partition, and summed into one BacklogStats.

One pipeline (a round trip per node) reads, for every partition: XLEN, XINFO GROUPS (the
group's ``lag`` and ``pending``) and the group's oldest pending entry (XPENDING, first id);
the DLQ topic's partitions add their XLEN. A second pipeline reads the held-time hash fields of
those oldest entries, so ``oldest_pending_age`` counts from the first delivery as on a single
server (see ``adapters/redis/receiver.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from dotmac.events.adapters.redis.receiver import held_time_key
from dotmac.events.bus import BacklogStats

__all__ = ["PartitionStats", "partition_stats", "summed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionStats:
    """One partition stream's figures; ``node`` is the master that holds it (``host:port``)."""

    partition: int
    stream: str
    node: str | None
    length: int
    lag: int | None
    pending: int | None
    oldest_pending_age: float | None


def _group_info(reply: Any, group: str) -> dict[str, Any] | None:
    if isinstance(reply, redis_errors.ResponseError):  # no such stream yet
        return None
    if isinstance(reply, Exception):
        raise reply
    for info in reply:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return dict(info)
    return None


async def partition_stats(
    client: RedisCluster, streams: list[str], group: str | None
) -> list[PartitionStats]:
    """The figures of each of ``streams`` (a topic's partitions, in order) for ``group``."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
        if group is not None:
            pipe.xinfo_groups(stream)
            pipe.xpending_range(stream, group, min="-", max="+", count=1)
    replies = await pipe.execute(raise_on_error=False)
    step = 1 if group is None else 3
    infos: list[dict[str, Any] | None] = []
    firsts: list[dict[str, Any] | None] = []
    for n in range(len(streams)):
        length = replies[n * step]
        if isinstance(length, Exception):
            raise length
        info = _group_info(replies[n * step + 1], group) if group is not None else None
        first = None
        if info is not None and int(info.get("pending") or 0) > 0:
            found = replies[n * step + 2]
            if isinstance(found, Exception):
                raise found
            first = found[0] if found else None
        infos.append(info)
        firsts.append(first)
    carried: list[Any] = []
    if group is not None and any(firsts):
        pipe = client.pipeline(transaction=False)
        for stream, first in zip(streams, firsts, strict=True):
            if first is not None:
                pipe.hget(held_time_key(stream, group), first["message_id"])
        carried = list(await pipe.execute())
    found_stats = []
    for n, stream in enumerate(streams):
        info, first = infos[n], firsts[n]
        oldest = None
        if first is not None:
            extra = carried.pop(0)
            oldest = max(int(first["time_since_delivered"]) + int(extra or 0), 0) / 1000
        node = client.get_node_from_key(stream)
        lag = None if info is None else info.get("lag")
        found_stats.append(
            PartitionStats(
                partition=n,
                stream=stream,
                node=None if node is None else node.name,
                length=int(replies[n * step]),
                lag=None if lag is None else int(lag),
                pending=None if info is None else int(info["pending"]),
                oldest_pending_age=oldest,
            )
        )
    return found_stats


def summed(
    topic: str, group: str | None, parts: list[PartitionStats], dlq_depth: int
) -> BacklogStats:
    """One BacklogStats for the topic: sums, the oldest age, None where a partition cannot tell
    (``lag`` is None when Redis cannot compute it for some partition)."""
    lags = [p.lag for p in parts]
    pendings = [p.pending for p in parts]
    ages = [p.oldest_pending_age for p in parts if p.oldest_pending_age is not None]
    known = group is not None and any(p is not None for p in pendings)
    return BacklogStats(
        topic=topic,
        group=group,
        length=sum(p.length for p in parts),
        lag=sum(lag or 0 for lag in lags) if known and None not in lags else None,
        pending=sum(p or 0 for p in pendings) if known else None,
        oldest_pending_age=max(ages) if ages else None,
        dlq_depth=dlq_depth,
    )
