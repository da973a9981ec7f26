"""The Redis Streams consumer of one subscription: XREADGROUP, batched XACK, claims and heartbeats.

Order of reading: first this consumer's own pending entries (a restarted process with a fixed
consumer name finishes what it held), then, every ``claim_interval``, entries that sat idle in
any consumer's pending list for ``claim_idle_ms`` (XAUTOCLAIM: a dead consumer's entries), and
otherwise new entries (``>``). Acks ride in the same pipeline as the next read.

Delivery counts come from the group's pending list (XPENDING), so a message claimed from a dead
process carries on with its true count and run_consumer's retry budget survives crashes.

While this consumer holds entries (handling them, or waiting to retry them) it touches them every
``claim_interval`` with ``XCLAIM ... JUSTID`` (which does not raise their delivery count), so no
other consumer claims the entries of a live, busy one. Each touch and each redelivery passes
``MIN-IDLE-TIME`` = time since our own last touch: if another consumer claimed the entry meanwhile
its idle time is shorter, the XCLAIM does nothing, and we know the entry is no longer ours.

Those touches (and retries, claims, re-reads) reset the entry's idle time, which is the only
clock Redis keeps per pending entry, so the idle time cannot also say how long an entry has been
pending. Whatever idle time a touch erases is added up per entry in a hash next to the stream
(:func:`held_time_key`: entry id -> milliseconds), in the same pipeline as the touch, so
"first delivered" = idle time + carried time, with no extra round trip and nothing written for
entries handled within ``claim_interval``. Fields are dropped in the next heartbeat after the
entry is acked; a field left by a consumer that died goes when the hash expires
(:data:`HELD_TIME_TTL`, renewed by every write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from dotmac.events.adapters.redis.errors import is_connection_error, is_no_group, translate
from dotmac.events.adapters.redis.records import entry_headers
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.transport import Delivery

__all__ = ["HELD_TIME_TTL", "RedisReceiver", "held_time_key"]

logger = logging.getLogger("dotmac.events.redis")

# Removes consumers with nothing pending, atomically, so one that just read an entry is never
# removed (XGROUP DELCONSUMER would drop its pending entries for good).
# ARGV: group, min idle ms, our consumer name, mode ("others": idle ones but us; "self": us).
LEAVE_SCRIPT = """
local removed = {}
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return removed end
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  local mine = info['name'] == ARGV[3]
  local wanted = (ARGV[4] == 'self' and mine)
    or (ARGV[4] == 'others' and not mine and info['idle'] >= tonumber(ARGV[2]))
  if wanted and info['pending'] == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(removed, info['name'])
  end
end
return removed
"""


HELD_TIME_TTL = 86_400
"""Seconds the held-time hash of a group outlives its last write."""


def held_time_key(stream: str, group: str) -> str:
    """The hash of idle time erased from ``group``'s pending entries of ``stream`` (ms per id).

    It shares the stream's hash slot (a cluster runs the heartbeat's MULTI over both): the
    stream's own ``{tag}`` when it has one, else the whole stream name as the tag (impossible
    only for a name holding a ``}`` but no tag).
    """
    start = stream.find("{")
    end = stream.find("}", start + 1) if start >= 0 else -1
    if end > start + 1 or "}" in stream:  # tagged (or a tag cannot be formed): keep the prefix
        return f"{stream}:dotmac-held-ms:{group}"
    return f"{{{stream}}}:dotmac-held-ms:{group}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _readable(value: bytes) -> str:
    return value.decode(errors="backslashreplace")


def _read_entry(fields: Mapping[Any, Any]) -> tuple[bytes, str | None, str | None]:
    """``(data, key, problem)`` of a stream entry; ``problem`` says why the engine cannot read it.

    Our own entries carry ``data`` (the codec's bytes) and an optional UTF-8 ``key``. Anything
    else was written by another producer: it is handed on with its bytes (a lone field's value
    exactly, several fields as a JSON object) and the problem, and goes to the dead-letter
    topic as a DecodeError instead of failing the read batch it arrived in.
    """
    data = fields.get(b"data")
    key = fields.get(b"key")
    if type(data) is bytes and (key is None or type(key) is bytes):
        if key is None:
            return data, None, None
        try:
            return data, key.decode(), None
        except UnicodeDecodeError:
            return data, None, f"entry field 'key' is not UTF-8: {key!r}"
    if data is not None:  # a client that decodes replies (decode_responses=True)
        return str(data).encode(), None if key is None else str(key), None
    names = ", ".join(_readable(n) if isinstance(n, bytes) else str(n) for n in fields)
    problem = f"entry is not an event: it has no 'data' field (fields: {names})"
    if len(fields) == 1:
        (value,) = fields.values()
        return (value if isinstance(value, bytes) else str(value).encode()), None, problem
    as_text = {
        (_readable(k) if isinstance(k, bytes) else str(k)): (
            _readable(v) if isinstance(v, bytes) else str(v)
        )
        for k, v in fields.items()
    }
    return orjson.dumps(as_text), None, problem


def _stream_entries(reply: Any) -> list[tuple[Any, Mapping[Any, Any]]]:
    """Entries of an XREADGROUP reply for one stream (RESP2: a list, RESP3: a dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):  # {stream: [[(id, fields), ...]]}
        return [entry for lists in reply.values() for entries in lists for entry in entries]
    return [entry for _, entries in reply for entry in entries]


def _idle_times(pending: list[dict[str, Any]]) -> dict[str, int]:
    """Entry id -> idle ms, from an XPENDING (extended form) reply."""
    return {_text(p["message_id"]): int(p["time_since_delivered"]) for p in pending}


def _still_ours(pending: list[dict[str, Any]], consumer: str, min_idle: int) -> bool:
    """Whether XPENDING, taken just before an XCLAIM that claimed nothing, shows the entry was
    ours and idle long enough: then the claim failed only because the stream no longer has it."""
    return (
        bool(pending)
        and _text(pending[0]["consumer"]) == consumer
        and int(pending[0]["time_since_delivered"]) >= min_idle
    )


class RedisReceiver:
    """The Receiver (see dotmac.events.transport) of one stream, group and consumer.

    ``report(where, error)`` tells the bus's observer about a failure outside a handler;
    ``on_trimmed(ids)`` counts and reports entries trimmed while pending.
    """

    def __init__(
        self,
        client: Redis,
        config: RedisConfig,
        *,
        topic: str,
        stream: str,
        group: str,
        consumer: str,
        private: bool,
        start_id: str,
        report: Callable[[str, BaseException], None],
        on_trimmed: Callable[[list[str]], None],
    ) -> None:
        self._client = client
        self._secrets = config.secrets
        self._report = report
        self._on_trimmed = on_trimmed
        self.topic = topic
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._private = private
        self._start_id = start_id
        self._block_ms = config.block_ms
        self._claim_idle_ms = config.claim_idle_ms
        self._claim_interval = config.claim_interval
        self._cleanup_interval = max(
            config.claim_interval, min(60.0, config.idle_consumer_ms / 2000)
        )
        self._idle_consumer_ms = config.idle_consumer_ms
        self._backoff = ExponentialBackoff(
            base_ms=config.reconnect_backoff_base_ms,
            max_ms=config.reconnect_backoff_max_ms,
            jitter=True,
        )
        self._held: dict[str, float] = {}  # entry id -> monotonic time we last touched it
        self._held_key = held_time_key(stream, group)
        self._carried: set[str] = set()  # ids we carried erased idle time for (have a field)
        self._uncarry: list[str] = []  # acked ids whose field the next heartbeat deletes
        self._unsent_acks: list[Any] = []  # entry ids: bytes as read (tokens), else text
        self._history_from: str | None = "0"  # where to read our own pending next; None: done
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_cleanup = 0.0
        self._failures = 0
        self._interrupted = False
        self._closing = False  # stops the heartbeat even if a redis call swallows its cancel
        self._touch_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._leave = self._client.register_script(LEAVE_SCRIPT)

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the group if needed and start touching held entries."""
        try:
            await self._create_group()
        except Exception as exc:
            raise self._error(exc, "create group") from exc
        self._heartbeat = asyncio.create_task(
            self._touch_loop(), name=f"dotmac-redis-heartbeat-{self.stream}"
        )

    async def _create_group(self) -> None:
        try:
            await self._client.xgroup_create(
                self.stream, self.group, id=self._start_id, mkstream=True
            )
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    def interrupt(self) -> None:
        self._interrupted = True
        self._wake.set()

    async def close(self) -> None:
        """Stop the heartbeat; destroy a private group, or leave a named one if we hold nothing."""
        if self._heartbeat is not None:
            self._closing = True
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        try:
            if self._unsent_acks:
                await self._client.xack(self.stream, self.group, *self._unsent_acks)
                self._unsent_acks = []
            if self._private:
                await self._client.xgroup_destroy(self.stream, self.group)
                await self._client.delete(self._held_key)
            else:
                await self._leave(keys=[self.stream], args=[self.group, 0, self.consumer, "self"])
        except Exception as exc:  # the group keeps what we could not tidy; nothing is lost
            self._report("close", self._error(exc, "close"))

    # --- fetching ------------------------------------------------------------------------------

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        self._forget(acks)
        ack_ids, self._unsent_acks = self._unsent_acks, []
        try:
            if self._interrupted:
                if ack_ids:
                    await self._client.xack(self.stream, self.group, *ack_ids)
                return []
            batch = await self._read(max_count, ack_ids)
        except Exception as exc:
            self._unsent_acks[:0] = ack_ids  # sent with the next read; acking twice is harmless
            if is_no_group(exc):
                await self._recreate_group(exc)
                return []
            if not is_connection_error(exc):
                raise self._error(exc, "read") from exc
            await self._wait_to_reconnect(exc)
            return []
        if self._failures:
            logger.warning(
                "redis stream %s group %s: reconnected after %d failed attempt(s)",
                self.stream,
                self.group,
                self._failures,
            )
            self._failures = 0
        return batch

    async def _read(self, max_count: int, ack_ids: list[Any]) -> list[Delivery]:
        if self._history_from is not None:
            return await self._read_own_pending(max_count, ack_ids)
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_interval
            claimed = await self._claim_idle(max_count, ack_ids)
            if now >= self._next_cleanup:
                self._next_cleanup = now + self._cleanup_interval
                await self._remove_idle_consumers()
            if claimed or self._interrupted:
                return claimed
            ack_ids = []
        pipe = self._client.pipeline(transaction=False)
        if ack_ids:
            pipe.xack(self.stream, self.group, *ack_ids)
        pipe.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=max_count, block=self._block_ms
        )
        replies = await pipe.execute()
        return self._fresh(_stream_entries(replies[-1]))

    def _fresh(self, entries: list[tuple[Any, Mapping[Any, Any]]]) -> list[Delivery]:
        """Deliveries of first reads (count 1): the hot path, one entry at a time. Their
        ``token`` is the entry id as the reply carried it (bytes), which XACK sends as it is;
        the text of ``message_id`` would be encoded again for every ack."""
        held, now, deliveries = self._held, time.monotonic(), []
        for entry_id, fields in entries:
            message_id = entry_id.decode() if type(entry_id) is bytes else str(entry_id)
            held[message_id] = now
            data = fields.get(b"data")
            key = fields.get(b"key")
            if len(fields) > 2 or (key is None and len(fields) > 1):  # with headers, or foreign
                deliveries.append(self._deliver(entry_id, fields, 1))
            elif type(data) is bytes and key is None:  # ours, without a key
                deliveries.append(Delivery(data, 1, message_id, None, None, None, entry_id))
            elif type(data) is bytes and type(key) is bytes and key.isascii():  # ours, keyed
                deliveries.append(Delivery(data, 1, message_id, key.decode(), None, None, entry_id))
            else:
                data, key, problem = _read_entry(fields)
                deliveries.append(Delivery(data, 1, message_id, key, unreadable=problem))
        return deliveries

    async def _read_own_pending(self, max_count: int, ack_ids: list[Any]) -> list[Delivery]:
        """Entries this consumer name held before (a restart): reading them raises their count."""
        start = self._history_from or "0"
        pipe = self._client.pipeline(transaction=False)
        if ack_ids:
            pipe.xack(self.stream, self.group, *ack_ids)
        pipe.xpending_range(  # their idle times, which the read below resets
            self.stream,
            self.group,
            min=start,
            max="+",
            count=max_count + 1,
            consumername=self.consumer,
        )
        pipe.xreadgroup(self.group, self.consumer, {self.stream: start}, count=max_count)
        replies = await pipe.execute()
        entries = _stream_entries(replies[-1])
        if not entries:
            self._history_from = None
            return []
        self._history_from = _text(entries[-1][0])
        return await self._with_counts(entries, deleted=[], erased=_idle_times(replies[-2]))

    async def _claim_idle(self, max_count: int, ack_ids: list[Any]) -> list[Delivery]:
        pipe = self._client.pipeline(transaction=False)
        if ack_ids:
            pipe.xack(self.stream, self.group, *ack_ids)
        pipe.xpending_range(  # the idle times of what XAUTOCLAIM takes (and resets) next
            self.stream,
            self.group,
            min=self._claim_cursor,
            max="+",
            count=max_count,
            idle=self._claim_idle_ms,
        )
        pipe.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=max_count,
        )
        replies = await pipe.execute()
        reply, erased = replies[-1], _idle_times(replies[-2])
        self._claim_cursor = _text(reply[0])
        if self._claim_cursor != "0-0":
            self._next_claim = 0.0  # more to look at: come back on the next fetch
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []  # Redis >= 7
        entries: list[tuple[Any, Mapping[Any, Any]]] = []
        now = time.monotonic()
        orphans = False
        for entry_id, fields in reply[1]:
            if entry_id is None:  # Redis 6.2 claims a trimmed entry and answers nil, no id
                orphans = True
            elif _text(entry_id) in self._held:  # ours already (a late heartbeat): keep handling it
                self._held[_text(entry_id)] = now
            else:
                entries.append((entry_id, fields))
        if orphans:
            claimed = {_text(i) for i, _ in entries}
            deleted += [i for i in await self._trimmed_orphans() if i not in claimed]
        claimed_ids = {_text(i) for i, _ in reply[1] if i is not None}
        erased = {i: ms for i, ms in erased.items() if i in claimed_ids}
        return await self._with_counts(entries, deleted, erased)

    async def _trimmed_orphans(self) -> list[str]:
        """Ids pending for us that we do not hold and the stream no longer has (Redis 6.2)."""
        mine = await self._client.xpending_range(
            self.stream, self.group, min="-", max="+", count=1000, consumername=self.consumer
        )
        orphans = [_text(p["message_id"]) for p in mine if _text(p["message_id"]) not in self._held]
        if not orphans:
            return []
        pipe = self._client.pipeline(transaction=False)
        for message_id in orphans:
            pipe.xrange(self.stream, min=message_id, max=message_id)
        found = await pipe.execute()
        return [message_id for message_id, entry in zip(orphans, found, strict=True) if not entry]

    async def _with_counts(
        self,
        entries: list[tuple[Any, Mapping[Any, Any]]],
        deleted: list[str],
        erased: Mapping[str, int],
    ) -> list[Delivery]:
        """Deliveries carrying their true delivery count, read from the group's pending list;
        ``erased`` (id -> ms) is the idle time the read that took them reset, carried over."""
        deleted = deleted + [_text(i) for i, fields in entries if not fields]  # Redis 6.2 / history
        entries = [(i, f) for i, f in entries if f]
        if deleted:
            await self._trimmed(deleted)
        erased = {i: ms for i, ms in erased.items() if i not in deleted}
        if not entries and not erased:
            return []
        pipe = self._client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        self._carry(pipe, erased)
        pending = (await pipe.execute())[: len(entries)]
        return [
            self._deliver(entry_id, fields, int(info[0]["times_delivered"]) if info else 1)
            for (entry_id, fields), info in zip(entries, pending, strict=True)
        ]

    def _deliver(self, entry_id: Any, fields: Mapping[Any, Any], count: int) -> Delivery:
        message_id = _text(entry_id)
        self._held[message_id] = time.monotonic()
        data, key, problem = _read_entry(fields)
        delivery = Delivery(
            data=data, count=count, message_id=message_id, key=key, unreadable=problem
        )
        if problem is None and len(fields) > 1:
            delivery.headers = entry_headers(fields)
        return delivery

    async def _recreate_group(self, exc: BaseException) -> None:
        logger.warning(
            "redis stream %s: group %s is gone (%s); creating it again",
            self.stream,
            self.group,
            exc,
        )
        self._held.clear()
        self._history_from = None
        self._claim_cursor = "0-0"
        with contextlib.suppress(Exception):  # the next read reports a persisting problem
            await self._create_group()

    async def _wait_to_reconnect(self, exc: BaseException) -> None:
        self._failures += 1
        error = self._error(exc, "read")
        if self._failures == 1:
            self._report("connection", error)
        else:
            logger.debug("redis stream %s: still reconnecting: %s", self.stream, error)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._backoff.delay(self._failures))

    # --- outcomes ------------------------------------------------------------------------------

    def _forget(self, deliveries: Sequence[Delivery]) -> None:
        held, carried, unsent = self._held, self._carried, self._unsent_acks
        for delivery in deliveries:
            message_id = delivery.message_id
            held.pop(message_id, None)
            unsent.append(delivery.token or message_id)
            if carried and message_id in carried:
                carried.discard(message_id)
                self._uncarry.append(message_id)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        ids = [d.token or d.message_id for d in deliveries]
        for delivery in deliveries:
            message_id = delivery.message_id
            self._held.pop(message_id, None)
            if message_id in self._carried:
                self._carried.discard(message_id)
                self._uncarry.append(message_id)
        if not ids:
            return
        try:
            await self._client.xack(self.stream, self.group, *ids)
        except Exception as exc:
            raise self._error(exc, "ack") from exc

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        """XCLAIM the entry back to ourselves, which raises its delivery count in the PEL."""
        message_id = delivery.message_id
        async with self._touch_lock:
            touched = self._held.get(message_id)
            if touched is None:
                return None
            idle = int((time.monotonic() - touched) * 1000)
            min_idle = max(idle - 1, 0)
            pipe = self._client.pipeline(transaction=True)
            pipe.xpending_range(self.stream, self.group, min=message_id, max=message_id, count=1)
            pipe.xclaim(self.stream, self.group, self.consumer, min_idle, [message_id])
            self._carry(pipe, {message_id: idle})
            try:
                pending, claimed, *_ = await pipe.execute()
            except Exception as exc:
                raise self._error(exc, "redeliver") from exc
        if claimed and claimed[0][1]:
            count = int(pending[0]["times_delivered"]) + 1 if pending else delivery.count + 1
            return self._deliver(claimed[0][0], claimed[0][1], count)
        self._held.pop(message_id, None)
        if claimed or _still_ours(
            pending, self.consumer, min_idle
        ):  # it was ours and the stream no longer has it
            await self._trimmed([message_id])
        return None

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Leave them pending but mark them idle, so another consumer claims them at once."""
        async with self._touch_lock:
            now = time.monotonic()
            pipe = self._client.pipeline(transaction=False)
            erased: dict[str, int] = {}
            for delivery in deliveries:
                touched = self._held.pop(delivery.message_id, None)
                if touched is not None:
                    idle = int((now - touched) * 1000)
                    pipe.xclaim(
                        self.stream,
                        self.group,
                        self.consumer,
                        max(idle - 1, 0),
                        [delivery.message_id],
                        idle=self._claim_idle_ms,
                        justid=True,
                    )
                    erased[delivery.message_id] = idle - self._claim_idle_ms  # idle grows
            self._carry(pipe, erased)
            self._carried.difference_update(erased)  # the next holder carries on with the field
            if len(pipe):
                try:
                    await pipe.execute()
                except Exception as exc:  # they still become claimable after claim_idle_ms
                    self._report("release", self._error(exc, "release"))

    async def _trimmed(self, ids: list[str]) -> None:
        """Entries trimmed from the stream while pending: ack them so they stop haunting the
        group, and report the loss."""
        for message_id in ids:
            self._held.pop(message_id, None)
            if message_id in self._carried:
                self._carried.discard(message_id)
                self._uncarry.append(message_id)
        try:
            await self._client.xack(self.stream, self.group, *ids)
        finally:
            self._on_trimmed(ids)

    # --- background ----------------------------------------------------------------------------

    async def _touch_loop(self) -> None:
        # Not ``while True``: redis-py (8.1) can return from a pipeline while the task is being
        # cancelled, the cancellation consumed; the flag still ends the loop then.
        while not self._closing:
            await asyncio.sleep(self._claim_interval)
            try:
                await self._touch_held()
            except Exception as exc:  # a dead connection: the read loop reports and reconnects
                logger.debug("redis stream %s: heartbeat failed: %r", self.stream, exc)

    async def _touch_held(self) -> None:
        """Reset the idle time of entries we still hold (without raising their count), carrying
        the erased idle time into the held-time hash; drop the fields of acked entries."""
        async with self._touch_lock:
            start = time.monotonic()
            due = [(i, t) for i, t in self._held.items() if start - t >= self._claim_interval]
            uncarry, self._uncarry = self._uncarry, []
            if not due and not uncarry:
                return
            pipe = self._client.pipeline(transaction=True)
            min_idles = []
            erased: dict[str, int] = {}
            for message_id, touched in due:
                idle = int((start - touched) * 1000)
                min_idle = max(idle - 1, 0)
                min_idles.append(min_idle)
                erased[message_id] = idle
                pipe.xpending_range(
                    self.stream, self.group, min=message_id, max=message_id, count=1
                )
                pipe.xclaim(
                    self.stream, self.group, self.consumer, min_idle, [message_id], justid=True
                )
            self._carry(pipe, erased)
            if uncarry:
                pipe.hdel(self._held_key, *uncarry)
            try:
                replies = await pipe.execute()
            except BaseException:
                self._uncarry[:0] = uncarry  # sent with the next heartbeat
                raise
            done = time.monotonic()
            trimmed = []
            for n, (message_id, _) in enumerate(due):
                pending, claimed = replies[2 * n], replies[2 * n + 1]
                if message_id not in self._held:
                    continue
                if claimed:
                    self._held[message_id] = done
                elif _still_ours(pending, self.consumer, min_idles[n]):
                    trimmed.append(message_id)  # its handler may still finish; a retry cannot
                else:  # another consumer claimed it, or it was acked: not ours to redo
                    self._held.pop(message_id, None)
                    self._carried.discard(message_id)  # its field is the new holder's now
            if trimmed:
                await self._trimmed(trimmed)

    def _carry(self, pipe: Any, erased: Mapping[str, int]) -> None:
        """Add to ``pipe`` the idle time (ms per id) a touch, claim or re-read resets."""
        if not erased:
            return
        for message_id, ms in erased.items():
            pipe.hincrby(self._held_key, message_id, ms)
        pipe.expire(self._held_key, HELD_TIME_TTL)
        self._carried.update(erased)

    async def _remove_idle_consumers(self) -> None:
        removed = await self._leave(
            keys=[self.stream], args=[self.group, self._idle_consumer_ms, self.consumer, "others"]
        )
        if removed:
            logger.info(
                "redis stream %s group %s: removed idle consumers with nothing pending: %s",
                self.stream,
                self.group,
                ", ".join(_text(r) for r in removed),
            )

    def _error(self, exc: BaseException, doing: str) -> Exception:
        return translate(
            exc,
            doing=f"{doing} on {self.stream} (group {self.group})",
            secrets=self._secrets,
        )
