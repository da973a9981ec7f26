"""``dotmac-events tail TOPIC``: print a topic's events as they arrive, one line each.

It reads the log (``bus.read_records`` with ``follow``), so it joins no consumer group and acks
nothing: tailing a topic never takes events away from its consumers. Records that are not
events of ours are printed too, as their raw bytes with the reason they cannot be read.
Ctrl-C or SIGTERM stops it (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import datetime

import orjson
from rich.console import Console
from rich.text import Text

from dotmac.events.bus import EventBus, ReadRecord
from dotmac.events.urls import create_bus, redact

__all__ = ["RAW_SHOWN", "record_line", "tail_topic"]

RAW_SHOWN = 400
"""Bytes of an unreadable record printed before the rest is cut (its size is printed too)."""


def _moment(record: ReadRecord) -> str:
    moment: datetime | None = record.timestamp
    if moment is None and record.event is not None:
        moment = record.event.timestamp
    if moment is None:
        return "-"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_line(record: ReadRecord) -> Text:
    """One record as one line: time, position, key, then the payload as JSON (an event) or the
    raw bytes and why they cannot be read (anything else)."""
    line = Text()
    line.append(_moment(record), style="dim")
    line.append(f"  {record.position}", style="cyan")
    if record.key is not None:
        line.append(f"  key={record.key}", style="yellow")
    event = record.event
    if event is None:
        data = record.data
        shown = repr(data[:RAW_SHOWN]) + (
            f"... ({len(data)} bytes)" if len(data) > RAW_SHOWN else ""
        )
        line.append(f"  unreadable: {record.error}", style="bold red")
        line.append(f"  raw={shown}")
        return line
    if event.headers:
        line.append(f"  headers={orjson.dumps(dict(event.headers)).decode()}", style="magenta")
    try:
        payload = orjson.dumps(event.payload).decode()
    except TypeError:  # a codec of the user's may hand back what JSON cannot hold
        payload = repr(event.payload)
    line.append(f"  {payload}")
    return line


async def _print_records(
    bus: EventBus, topic: str, since: str | None, limit: int | None, out: Console
) -> None:
    records = bus.read_records(topic, since=since, limit=limit, follow=True)
    async with contextlib.aclosing(records):
        async for record in records:
            out.print(record_line(record))


async def tail_topic(
    url: str, topic: str, *, from_beginning: bool, limit: int | None, out: Console, err: Console
) -> None:
    """Print ``topic``'s records from its end (or first held record) until ``limit`` records,
    a signal, or an error (raised: EventBusError, ImportError, OSError)."""
    bus = create_bus(url)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with bus:
            start = "the first held event" if from_beginning else "now"
            err.print(f"tailing {topic} on {redact(url)} from {start}; Ctrl-C stops", style="dim")
            if bus.adapter == "memory":
                err.print("memory:// is this process's own bus: nothing published elsewhere shows")
            reading = asyncio.ensure_future(
                _print_records(bus, topic, None if from_beginning else "end", limit, out)
            )
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not reading.done():
                    reading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reading
            if not reading.cancelled():
                reading.result()  # the read's error, if it ended with one
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
