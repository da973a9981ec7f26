"""Reading a topic's log back, over any transport's ``_read_log``: checks, decoding, replay.

The transport yields :class:`~dotmac.events.transport.LogRecord` objects (bytes and a
position); here they are checked against the caller's bounds, decoded with the bus's codec and
counted against ``limit``. Records that cannot be decoded are yielded with their bytes and the
error, never dropped. Reading joins no group, so nothing here acks anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from dotmac.events.bus import EventHandler, ReadRecord
from dotmac.events.codec import Codec
from dotmac.events.engine.calling import make_awaitable
from dotmac.events.errors import ConfigurationError, DecodeError, EventBusError
from dotmac.events.event import Event
from dotmac.events.schemas import typed_handler
from dotmac.events.transport import LogRecord

__all__ = ["check_bounds", "decoded_records", "replay_events"]

Bound = datetime | str | None


def _bound(name: str, value: object, *, end_allowed: bool) -> Bound:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(
                name, f"must be a timezone-aware datetime (datetime.now(UTC)), got {value!r}"
            )
        return value.astimezone(UTC)
    if isinstance(value, str) and value:
        if value == "end" and not end_allowed:
            raise ConfigurationError(name, "'end' is only a start: leave until=None instead")
        return value
    raise ConfigurationError(name, f"must be a datetime, a position string or None, got {value!r}")


def check_bounds(
    since: object, until: object, limit: object, follow: object
) -> tuple[Bound, Bound]:
    """``since`` and ``until`` in the forms a transport's ``_read_log`` takes (UTC datetimes).

    Raises:
        ConfigurationError: naming the argument that is wrong.
    """
    start = _bound("since", since, end_allowed=True)
    stop = _bound("until", until, end_allowed=False)
    if isinstance(start, datetime) and isinstance(stop, datetime) and stop <= start:
        raise ConfigurationError("until", f"must be after since ({start}), got {stop}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigurationError("limit", f"must be an int >= 1 or None, got {limit!r}")
    if not isinstance(follow, bool):
        raise ConfigurationError("follow", f"must be a bool, got {follow!r}")
    return start, stop


def _decode(topic: str, record: LogRecord, codec: Codec) -> ReadRecord:
    event: Event | None = None
    error: DecodeError | None = None
    if record.unreadable is not None:
        error = DecodeError(record.unreadable)
    else:
        try:
            event = codec.decode(record.data)
        except DecodeError as exc:
            error = exc
        except Exception as exc:  # a codec bug still shows as this record's problem
            error = DecodeError(f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
    if event is not None:
        event._received(0, "", record.position, record.partition, record.offset, None)
    return ReadRecord(
        topic=topic,
        position=record.position,
        timestamp=record.timestamp,
        key=record.key,
        data=record.data,
        headers=record.headers,
        event=event,
        error=error,
    )


async def decoded_records(
    topic: str,
    records: AsyncGenerator[LogRecord | None, None],
    codec: Codec,
    *,
    limit: int | None,
    until: Bound,
    stopped: Callable[[], bool],
) -> AsyncGenerator[ReadRecord, None]:
    """``records`` decoded, up to ``limit``. While following, the transport's idle ticks
    (None) end the read once ``stopped()`` (the bus is closing) or the clock passed a datetime
    ``until``: nothing stored before it can still come. A broker error after the bus closed
    ends the read too (closing took the reader's connection)."""
    taken = 0
    async with contextlib.aclosing(records):
        while True:
            try:
                record = await anext(records)
            except StopAsyncIteration:
                return
            except EventBusError:
                if stopped():  # the bus closed under the reader: its connection went with it
                    return
                raise
            if record is None:
                if stopped() or (isinstance(until, datetime) and datetime.now(UTC) >= until):
                    return
                continue
            yield _decode(topic, record, codec)
            taken += 1
            if limit is not None and taken >= limit:
                return


async def replay_events(
    events: AsyncGenerator[Event, None],
    handler: EventHandler,
    threads: Callable[[], ThreadPoolExecutor],
) -> int:
    """Call ``handler`` with each event in order, as a subscription would call it; return how
    many were handled. The first exception (the handler's, or a DecodeError) propagates."""
    if not callable(handler):
        raise ConfigurationError("handler", f"must be callable, got {handler!r}")
    typed = typed_handler(handler)
    call: Callable[[Event], Awaitable[Any]] = make_awaitable(
        handler if typed is None else typed[0], threads
    )
    handled = 0
    async with contextlib.aclosing(events):
        async for event in events:
            await call(event)
            handled += 1
    return handled
