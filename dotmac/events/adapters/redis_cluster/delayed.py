"""Delayed delivery on Redis Cluster: a sorted set beside each partition stream, in its slot.

A Lua script may only touch keys of one slot on Cluster, so the single-server design (one index
of topics, one script over all of them) becomes one sorted set per partition,
``{prefix}{t/p}:delayed`` next to the stream ``{prefix}{t/p}``, scored by due time (Unix
seconds). ``publish(event, delay=...)`` ZADDs each event to its partition's set (the key picks
the partition, as for a publish). A mover runs in every bus that delays or consumes, for the
topics it delays or consumes: each pass reads the head of every set it knows in one pipeline
(grouped per node), and for the sets whose head is due runs a script that, by the server's
clock, XADDs the due events to the stream with the same fields a publish writes and removes them,
atomically: any number of movers share the work without moving an event twice.

Precision: never early; late by at most ``delay_poll_interval``. A topic nobody consumes or
delays to in a running process waits until one does (nobody would read it meanwhile).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from redis.asyncio.cluster import RedisCluster

from dotmac.events.adapters.redis.delayed import PUBLISH_MEMBER_LUA, held_member
from dotmac.events.adapters.redis.mover import MoverLoop
from dotmac.events.event import Event

__all__ = ["MOVE_SCRIPT", "ClusterDelayMover", "schedule"]

logger = logging.getLogger("dotmac.events.redis_cluster")

_BATCH = 500
_CLOCK_SKEW = 1.0  # a head due this soon by our clock is checked by the server's

# KEYS: the delayed set, its stream. ARGV: batch size, MAXLEN ('' for none).
# Returns {moved, earliest due still held or false, the server's now} (as strings).
MOVE_SCRIPT = (
    PUBLISH_MEMBER_LUA
    + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local batch, maxlen = tonumber(ARGV[1]), ARGV[2]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)
for _, member in ipairs(due) do
  publish_member(KEYS[2], maxlen, member)
  redis.call('ZREM', KEYS[1], member)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then return {#due, false, tostring(now)} end
return {#due, head[2], tostring(now)}
"""
)


async def schedule(
    client: RedisCluster,
    placed: Iterable[tuple[str, Event, bytes]],
    due: float,
) -> None:
    """ZADD each ``(delayed set, event, data)`` scored ``due``: one pipeline, a round trip per
    node."""
    pipe = client.pipeline(transaction=False)
    for key, event, data in placed:
        pipe.zadd(key, {held_member(event, data): due})
    await pipe.execute()


class ClusterDelayMover(MoverLoop):
    """Moves due events of the partitions it was given into their streams until stopped."""

    def __init__(
        self,
        client: RedisCluster,
        *,
        max_stream_length: int | None,
        poll_interval: float,
        report: Callable[[str, BaseException], None],
    ) -> None:
        super().__init__(
            name="dotmac-redis-cluster-delay-mover", poll_interval=poll_interval, report=report
        )
        self._client = client
        self._maxlen = "" if max_stream_length is None else str(max_stream_length)
        self._pairs: dict[str, str] = {}  # delayed set -> stream

    def watch(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Move events of these ``(delayed set, stream)`` pairs from now on."""
        fresh = [pair for pair in pairs if pair[0] not in self._pairs]
        self._pairs.update(fresh)
        if fresh:
            self.poke()

    async def move_once(self) -> float:
        """Move what is due; return seconds until the next head is due (at most the poll)."""
        pairs = list(self._pairs.items())
        if not pairs:
            return self._poll
        pipe = self._client.pipeline(transaction=False)
        for held, _ in pairs:
            pipe.zrange(held, 0, 0, withscores=True)
        heads = await pipe.execute()
        now = time.time()
        wait = self._poll
        due: list[tuple[str, str]] = []
        for pair, head in zip(pairs, heads, strict=True):
            if head:
                score = float(head[0][1])
                if score <= now + _CLOCK_SKEW:
                    due.append(pair)
                else:
                    wait = min(wait, score - now)
        if not due:
            return wait
        pipe = self._client.pipeline(transaction=False)
        for held, stream in due:
            pipe.eval(MOVE_SCRIPT, 2, held, stream, _BATCH, self._maxlen)
        for moved, first, server_now in await pipe.execute():
            self.moved += int(moved)
            if int(moved) >= _BATCH:
                return 0.0
            if first is not None:
                wait = min(wait, max(float(first) - float(server_now), 0.0) + 0.001)
        return wait
