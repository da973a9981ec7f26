"""Delayed delivery on Redis: due events wait in the server, in a sorted set per topic.

``publish(event, delay=...)`` adds the encoded event to ``{prefix}_delayed:{topic}`` scored by
its due time (Unix seconds) and lowers the topic's score in the index ``{prefix}_delayed``
(the earliest due time per topic), in one script. A mover (:class:`DelayMover`) runs in every
bus that scheduled something or consumes: a Lua script takes the topics whose earliest event is
due by the server's clock (``TIME``), XADDs their due events to the stream exactly as a publish
would (same ``data`` and ``key`` fields, same ``MAXLEN ~``) and removes them, atomically, so any
number of movers in any number of processes share the work without moving an event twice. The
events live in Redis, so they survive restarts of every process of ours; Redis's own
persistence settings decide whether they survive a Redis restart, as for streams.

Precision: never early; late by at most ``delay_poll_interval`` (the mover sleeps until the
earliest due time it knows of, and checks at least that often for events scheduled elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from dotmac.events.adapters.redis.mover import MoverLoop
from dotmac.events.event import Event

__all__ = [
    "PUBLISH_MEMBER_LUA",
    "DelayMover",
    "delayed_key",
    "held_member",
    "index_key",
    "schedule",
]

logger = logging.getLogger("dotmac.events.redis")

_BATCH = 500  # events one mover pass moves per topic at most (a pass is one atomic script)

SCHEDULE_SCRIPT = """
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i]) end
redis.call('ZADD', KEYS[2], 'LT', ARGV[1], ARGV[2])
return #ARGV - 2
"""

PUBLISH_MEMBER_LUA = """
local function publish_member(stream, maxlen, member)
  local colon = string.find(member, ':', 1, true)
  local size = tonumber(string.sub(member, 1, colon - 1))
  local fields
  if size < 0 then
    fields = {'data', string.sub(member, colon + 1)}
  else
    fields = {'data', string.sub(member, colon + 1 + size),
              'key', string.sub(member, colon + 1, colon + size)}
  end
  if maxlen == '' then
    redis.call('XADD', stream, '*', unpack(fields))
  else
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
end
"""
"""Lua: XADD a :func:`held_member` to ``stream`` with the fields a publish writes (``maxlen``
'' for none); every mover script starts with it, so the member layout is read in one place."""

# KEYS[1]: index. ARGV: prefix, batch size, MAXLEN ('' for none).
# Returns {moved, earliest due still held or false, the server's now} (times as strings: Redis
# would truncate Lua numbers to integers).
MOVE_SCRIPT = (
    PUBLISH_MEMBER_LUA
    + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local prefix, batch, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local moved = 0
local topics = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, topic in ipairs(topics) do
  local held = prefix .. '_delayed:' .. topic
  local stream = prefix .. topic
  local due = redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, batch)
  for _, member in ipairs(due) do
    publish_member(stream, maxlen, member)
    redis.call('ZREM', held, member)
    moved = moved + 1
  end
  local head = redis.call('ZRANGE', held, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', KEYS[1], topic)
  else
    redis.call('ZADD', KEYS[1], head[2], topic)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return {moved, false, tostring(now)} end
return {moved, first[2], tostring(now)}
"""
)


def index_key(prefix: str) -> str:
    """The sorted set of topics with held events, scored by their earliest due time."""
    return f"{prefix}_delayed"


def delayed_key(prefix: str, topic: str) -> str:
    """The sorted set holding ``topic``'s delayed events, scored by due time."""
    return f"{prefix}_delayed:{topic}"


def held_member(event: Event, data: bytes) -> bytes:
    """``<key length>:<key><data>``, or ``-1:<data>`` without a key: what the mover splits."""
    if event.key is None:
        return b"-1:" + data
    key = event.key.encode()
    return b"%d:%b%b" % (len(key), key, data)


async def schedule(
    client: Redis, prefix: str, topic: str, batch: Sequence[tuple[Event, bytes]], due: float
) -> None:
    """Hold ``batch`` for ``topic`` until ``due``; one atomic script, one round trip."""
    args: list[Any] = [repr(due), topic, *(held_member(event, data) for event, data in batch)]
    await client.eval(SCHEDULE_SCRIPT, 2, delayed_key(prefix, topic), index_key(prefix), *args)


class DelayMover(MoverLoop):
    """Moves due events into their streams until stopped; see the module docstring."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        max_stream_length: int | None,
        poll_interval: float,
        report: Callable[[str, BaseException], None],
    ) -> None:
        super().__init__(
            name="dotmac-redis-delay-mover", poll_interval=poll_interval, report=report
        )
        self._client = client
        self._prefix = prefix
        self._maxlen = "" if max_stream_length is None else str(max_stream_length)
        self._move = client.register_script(MOVE_SCRIPT)

    async def move_once(self) -> float:
        """Move what is due now; return seconds until the earliest event still held is due
        (by the server's clock), at most the poll interval."""
        moved, first, now = await self._move(
            keys=[index_key(self._prefix)], args=[self._prefix, _BATCH, self._maxlen]
        )
        self.moved += int(moved)
        if int(moved) >= _BATCH:
            return 0.0  # more may be due
        if first is None:
            return self._poll
        return min(self._poll, max(float(first) - float(now), 0.0) + 0.001)
