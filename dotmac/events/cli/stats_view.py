"""``dotmac-events stats``: backlog numbers per topic and group as a rich table, once or watched.

``--watch`` keeps one bus open and redraws the table in place every interval (rich ``Live``)
until SIGINT or SIGTERM, then leaves the last table on screen and returns normally. When
stdout is not a terminal (a pipe, a log file) each refresh prints a new table instead, since
there is no screen to redraw.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dotmac.events.bus import BacklogStats, EventBus
from dotmac.events.engine.bus import TransportBus
from dotmac.events.errors import UnsupportedOperation
from dotmac.events.urls import create_bus

__all__ = ["COLUMNS", "EVERY_TOPIC", "collect", "stats_table", "watch_stats"]

COLUMNS = ("length", "lag", "pending", "oldest_pending_age", "dlq_depth")
"""The :class:`BacklogStats` fields shown, in order."""
EVERY_TOPIC = "**"
"""The pattern for "all topics": it leaves out dead-letter and internal ones."""


async def collect(
    bus: EventBus, topics: Sequence[str], groups: Sequence[str | None]
) -> list[BacklogStats]:
    """One row per (topic, group), asked one after the other (a few round trips each).

    No ``topics``: every topic the bus holds now (asked again on each call, so a watch sees
    new ones), less dead-letter and internal topics: a topic's DLQ is its ``dlq_depth``.

    Raises:
        UnsupportedOperation: no ``topics`` and the bus cannot list its own.
    """
    if not topics:
        if not isinstance(bus, TransportBus):
            raise UnsupportedOperation(f"the {bus.adapter} bus cannot list its topics")
        topics = await bus.topics(EVERY_TOPIC)
    return [await bus.stats(topic, group) for topic in topics for group in groups]


def stats_table(rows: Sequence[BacklogStats], title: str, caption: str | None = None) -> Table:
    """``rows`` as a table: topic, group, then :data:`COLUMNS` (``-`` where the bus cannot
    tell, ages in seconds)."""
    table = Table(title=title, caption=caption)
    table.add_column("topic")
    table.add_column("group")
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for row in rows:
        cells = [getattr(row, name) for name in COLUMNS]
        table.add_row(
            row.topic,
            row.group or "-",
            *("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells),
        )
    return table


async def watch_stats(
    url: str | None,
    topics: Sequence[str],
    groups: Sequence[str | None],
    *,
    title: str,
    interval: float,
    console: Console,
) -> None:
    """Redraw the table every ``interval`` seconds until SIGINT/SIGTERM.

    Raises:
        EventBusError: the bus could not be created or asked (the watch stops).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with create_bus(url) as bus:

            async def table() -> Table:
                rows = await collect(bus, topics, groups)
                when = time.strftime("%H:%M:%S")
                return stats_table(rows, title, f"at {when}, every {interval:g}s; Ctrl-C stops")

            if console.is_terminal:
                with Live(await table(), console=console, auto_refresh=False) as live:
                    while not await _stopped(stop, interval):
                        live.update(await table(), refresh=True)
            else:
                console.print(await table())
                while not await _stopped(stop, interval):
                    console.print(await table())
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _stopped(stop: asyncio.Event, interval: float) -> bool:
    """Wait ``interval`` seconds or until ``stop`` is set; True when it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(interval):
            await stop.wait()
    return stop.is_set()
