"""Backlog figures of Redis streams for one group, read alike on a server and on a cluster.

Per stream, one pipeline asks XLEN, XINFO GROUPS (the group's ``lag`` and ``pending``) and the
group's oldest pending entry (XPENDING, the lowest id: entries are first delivered in id order).
A second round trip reads the held-time hash fields of those oldest entries, so
``oldest_pending_age`` counts from the first delivery: the entry's idle time plus the idle time
that heartbeats, retries and claims erased (see ``receiver.py``). A stuck handler's entry
therefore ages although its consumer keeps touching it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from dotmac.events.adapters.redis.receiver import held_time_key
from dotmac.events.bus import BacklogStats

__all__ = ["Figures", "StreamBacklog", "ask_backlog", "stream_backlogs", "summed"]


class Figures(Protocol):
    """What :func:`summed` adds up: a stream's figures (a partition's, on a cluster)."""

    @property
    def length(self) -> int: ...
    @property
    def lag(self) -> int | None: ...
    @property
    def pending(self) -> int | None: ...
    @property
    def oldest_pending_age(self) -> float | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamBacklog:
    """One stream's figures for a group; None where the stream or the group cannot tell."""

    length: int
    lag: int | None
    pending: int | None
    oldest_pending_age: float | None


def ask_backlog(pipe: Any, stream: str, group: str | None) -> None:
    """Queue on ``pipe`` the commands whose replies :func:`stream_backlogs` reads."""
    pipe.xlen(stream)
    if group is not None:
        pipe.xinfo_groups(stream)
        pipe.xpending_range(stream, group, min="-", max="+", count=1)


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


async def stream_backlogs(
    client: Redis, streams: Sequence[str], group: str | None, replies: Sequence[Any]
) -> list[StreamBacklog]:
    """The figures of ``streams`` from ``replies`` (those of :func:`ask_backlog` for each, in
    order, errors as values), reading the held time of their oldest entries in one more
    round trip.

    Raises:
        Exception: a reply that is an error, or the held-time read's (redis-py's, untranslated).
    """
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
    figures = []
    for n, (info, first) in enumerate(zip(infos, firsts, strict=True)):
        oldest = None
        if first is not None:
            extra = carried.pop(0)
            oldest = max(int(first["time_since_delivered"]) + int(extra or 0), 0) / 1000
        lag = None if info is None else info.get("lag")
        figures.append(
            StreamBacklog(
                length=int(replies[n * step]),
                lag=None if lag is None else int(lag),
                pending=None if info is None else int(info["pending"]),
                oldest_pending_age=oldest,
            )
        )
    return figures


def summed(topic: str, group: str | None, parts: Sequence[Figures], dlq_depth: int) -> BacklogStats:
    """One BacklogStats for the topic: sums, the oldest age, None where a part cannot tell
    (``lag`` is None when Redis cannot compute it for some part). One part is returned as is."""
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
