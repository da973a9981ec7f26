"""Backlog figures of a partitioned topic, per partition (with the master holding each).

The figures are read as on a single server (``adapters/redis/backlog.py``), for every partition
stream in one pipeline (a round trip per node), the held times in a second one; the bus adds
them up with :func:`~dotmac.events.adapters.redis.backlog.summed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from dotmac.events.adapters.redis.backlog import ask_backlog, stream_backlogs

__all__ = ["PartitionStats", "partition_stats"]


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


async def partition_stats(
    client: RedisCluster, streams: list[str], group: str | None
) -> list[PartitionStats]:
    """The figures of each of ``streams`` (a topic's partitions, in order) for ``group``."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        ask_backlog(pipe, stream, group)
    replies = await pipe.execute(raise_on_error=False)
    # RedisCluster routes the held-time reads by key, as it does a RedisReceiver's commands
    figures = await stream_backlogs(cast(Redis, client), streams, group, replies)
    found = []
    for n, (stream, figure) in enumerate(zip(streams, figures, strict=True)):
        node = client.get_node_from_key(stream)
        found.append(
            PartitionStats(
                partition=n,
                stream=stream,
                node=None if node is None else node.name,
                length=figure.length,
                lag=figure.lag,
                pending=figure.pending,
                oldest_pending_age=figure.oldest_pending_age,
            )
        )
    return found
