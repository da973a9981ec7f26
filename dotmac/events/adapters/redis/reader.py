"""Reading a stream back (the Redis bus's ``_read_log``): XRANGE in pages, then XREAD BLOCK.

Neither XREADGROUP nor XACK is sent, so consumer groups are exactly as they were. A position is
the entry id. Entry ids begin with the server's clock in milliseconds when it stored the entry,
so a datetime bound becomes an id bound: ``since`` is ``<ms>-0``, ``until`` is ``(<ms>-0``
(exclusive). Pages hold at most :data:`PAGE` entries, so no read is unbounded.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from dotmac.events.adapters.redis.errors import is_connection_error, translate
from dotmac.events.adapters.redis.receiver import _read_entry, _stream_entries, _text
from dotmac.events.adapters.redis.records import entry_headers
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.errors import ConfigurationError, EventBusError
from dotmac.events.transport import LogRecord

__all__ = ["PAGE", "read_stream"]

PAGE = 500
"""Entries asked for per XRANGE or XREAD."""

_ENTRY_ID = re.compile(r"^(\d+)-(\d+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_SEQ = 2**64 - 1


def _entry_id(name: str, position: str) -> tuple[int, int]:
    found = _ENTRY_ID.match(position)
    if found is None:
        raise ConfigurationError(
            name, f"{position!r} is not a Redis stream entry id (e.g. '1767225600000-0')"
        )
    return int(found[1]), int(found[2])


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _record(entry_id: Any, fields: Mapping[Any, Any]) -> LogRecord:
    position = _text(entry_id)
    data, key, problem = _read_entry(fields)
    ms = int(position.partition("-")[0])
    return LogRecord(
        position,
        data,
        timestamp=_EPOCH + timedelta(milliseconds=ms),
        key=key,
        headers=() if problem is not None else entry_headers(fields),
        unreadable=problem,
    )


def _beyond(position: str, until: datetime | tuple[int, int] | None) -> bool:
    """Whether entry ``position`` lies outside ``until``: at or after a datetime, after an id."""
    if until is None:
        return False
    ms, seq = _entry_id("until", position)
    if isinstance(until, datetime):
        return ms >= _ms(until)
    return (ms, seq) > until


def _reached(position: str, until: datetime | tuple[int, int] | None) -> bool:
    """Whether entry ``position`` is the last one an entry id ``until`` lets through."""
    return isinstance(until, tuple) and _entry_id("until", position) >= until


async def read_stream(
    client: Redis,
    stream: str,
    *,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int | None,
    follow: bool,
    block_ms: int,
    secrets: tuple[str, ...],
    backoff: ExponentialBackoff,
) -> AsyncGenerator[LogRecord | None, None]:
    """``stream``'s entries from ``since`` (see :class:`~dotmac.events.transport.LogReader`).

    A follower outlives lost connections: it waits ``backoff`` and reads on from the last
    entry it yielded (yielding None meanwhile, so the caller can stop); a read that is not
    following raises TransportError instead.
    """
    after = _entry_id("since", since) if isinstance(since, str) and since != "end" else None
    last = _entry_id("until", until) if isinstance(until, str) else None
    bound: datetime | tuple[int, int] | None = last or (
        until if isinstance(until, datetime) else None
    )
    low = "-"
    if isinstance(since, datetime):
        low = f"{_ms(since)}-0"
    elif after is not None:
        low = f"({after[0]}-{after[1]}"
    high = "+"
    if isinstance(until, datetime):
        high = f"({_ms(until)}-0"
    elif last is not None:
        high = f"{last[0]}-{last[1]}"
    doing = f"read of {stream}"
    try:
        cursor = await _start_cursor(client, stream, since, after)
        left = limit
        while since != "end":
            count = PAGE if left is None else min(PAGE, left)
            entries = await client.xrange(stream, min=low, max=high, count=count) or []
            for entry_id, fields in entries:
                cursor = _text(entry_id)
                yield _record(entry_id, fields or {})
            if left is not None:
                left -= len(entries)
            if len(entries) < count or left == 0:
                break
            low = f"({cursor}"
        if not follow or left == 0 or _reached(cursor, bound):
            return
        doing = f"follow of {stream}"
        failures = 0
        while True:
            try:
                reply = await client.xread({stream: cursor}, count=PAGE, block=block_ms)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                failures += 1
                yield None
                await asyncio.sleep(backoff.delay(failures))
                continue
            failures = 0
            fresh = _stream_entries(reply)
            if not fresh:
                yield None
            for fresh_id, fresh_fields in fresh:
                cursor = _text(fresh_id)
                if _beyond(cursor, bound):
                    return
                yield _record(fresh_id, fresh_fields)
                if _reached(cursor, bound):
                    return
    except EventBusError:
        raise
    except Exception as exc:
        raise translate(exc, doing=doing, secrets=secrets) from exc


async def _start_cursor(
    client: Redis, stream: str, since: datetime | str | None, after: tuple[int, int] | None
) -> str:
    """The id a follower reads after when the log holds nothing in range."""
    if since == "end":
        last = await client.xrevrange(stream, max="+", min="-", count=1)
        return _text(last[0][0]) if last else "0-0"
    if after is not None:
        return f"{after[0]}-{after[1]}"
    if isinstance(since, datetime) and _ms(since) > 0:
        return f"{_ms(since) - 1}-{_LAST_SEQ}"
    return "0-0"
