"""The click commands. Every error the user can cause ends as one line on stderr, no traceback."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dotmac.events.bus import BacklogStats
from dotmac.events.cli.demo import print_summary, run_demo
from dotmac.events.cli.dlq import dlq
from dotmac.events.cli.jsonlines import LineError, publish_lines
from dotmac.events.cli.stats_view import collect, stats_table, watch_stats
from dotmac.events.cli.tail import tail_topic
from dotmac.events.cli.worker import WorkerError, configure_logging, run_worker
from dotmac.events.errors import EventBusError
from dotmac.events.event import Event
from dotmac.events.urls import ENV_VAR, create_bus, redact
from dotmac.events.version import __version__

__all__ = ["cli", "run"]

PROG = "dotmac-events"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
bus_option = click.option(
    "--bus",
    "url",
    envvar=ENV_VAR,
    metavar="URL",
    help=f"memory://, redis://host:6379/0?key_prefix=..., kafka://h1:9092,h2:9092 [env {ENV_VAR}]",
)


class Failed(click.ClickException):
    """One line for the user, exit code 1."""


def _interval(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--watch``'s optional seconds; a word there is most likely a TOPIC put after it."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a number of seconds (put TOPIC before --watch)"
        ) from None
    if not seconds >= 0.1:
        raise click.BadParameter(f"must be at least 0.1 seconds, got {value}")
    return seconds


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", "-V", prog_name=PROG, message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context) -> int:
    """Publish and consume events on memory, Redis Streams or Kafka."""
    if ctx.invoked_subcommand is None:  # `python -m dotmac.events` alone runs the demo
        return int(ctx.invoke(demo))
    return 0


@cli.command()
@click.option("--events", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
def demo(events: int = 300, concurrency: int = 4) -> int:
    """Run an end-to-end demo on the memory bus (retries and dead letters)."""
    print_summary(asyncio.run(run_demo(events, concurrency)))
    return 0


@cli.command()
@click.argument("target", metavar="MODULE[:ATTRIBUTE]")
@bus_option
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="seconds running handlers get to finish after SIGTERM/SIGINT",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="handlers running at once per subscription, for every handler [default: each "
    "handler's own]",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker(
    target: str, url: str | None, drain_timeout: float, concurrency: int | None, log_level: str
) -> int:
    """Run the EventRouter MODULE:ATTRIBUTE (or MODULE's @event_handler functions) on a bus.

    The first SIGTERM/SIGINT stops fetching and drains running handlers for up to
    --drain-timeout seconds (exit 0); what did not finish stays unacknowledged (exit 3).
    A second signal exits at once (exit 4).
    """
    if url is None:
        raise click.UsageError(f"give --bus URL or set {ENV_VAR}")
    configure_logging(log_level)
    try:
        return run_worker(target, url, drain_timeout, concurrency)
    except WorkerError as exc:
        raise Failed(str(exc)) from None


@cli.command()
@click.argument("topic", required=False)
@click.argument("payload", metavar="[JSON]", required=False)
@bus_option
@click.option(
    "--key", default=None, help="partition / ordering key (--file: for lines without one)"
)
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    default=None,
    metavar="PATH",
    help="JSON lines to publish ('-' for stdin): payloads for TOPIC, or without TOPIC "
    '{"topic": ..., "payload": {...}, "key": ...} per line',
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="--file: events per publish_many call",
)
def publish(
    topic: str | None,
    payload: str | None,
    url: str | None,
    key: str | None,
    source: BinaryIO | None,
    batch_size: int,
) -> int:
    """Publish the JSON object PAYLOAD to TOPIC (prints the event's id), or every line of
    --file (prints how many; a bad line stops the run, the lines before it are published)."""
    if source is not None:
        if payload is not None:
            raise click.UsageError("give JSON or --file, not both")
        return _publish_file(source, topic, key, url, batch_size)
    if topic is None or payload is None:
        raise click.UsageError("give TOPIC and JSON, or --file PATH")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Failed(f"JSON is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise Failed(f"JSON must be an object, got {type(data).__name__}")
    event = _checked(lambda: Event(topic, data, key=key))

    async def send() -> None:
        async with create_bus(url) as bus:
            await bus.publish(event)

    _call_bus(url, send)
    click.echo(event.id)
    return 0


def _publish_file(
    source: BinaryIO, topic: str | None, key: str | None, url: str | None, batch_size: int
) -> int:
    if topic is not None:
        _checked(lambda: Event(topic, {}))  # a bad TOPIC is refused before anything is read
    if url is None:
        raise click.UsageError(f"give --bus URL or set {ENV_VAR}")
    try:
        bus = create_bus(url)
    except (EventBusError, ImportError) as exc:
        raise Failed(str(exc)) from None
    err = Console(stderr=True)
    size = _file_size(source)
    published = 0
    with Progress(
        TextColumn("publishing"),
        BarColumn(),
        TextColumn("{task.fields[events]} events"),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as progress:
        bar = progress.add_task("publish", total=size, events=0)

        def advance(events: int, taken: int) -> None:
            nonlocal published
            published += events
            progress.update(bar, advance=taken, events=published)

        async def send() -> int:
            async with bus:
                return await publish_lines(
                    bus, source, topic=topic, key=key, batch_size=batch_size, advance=advance
                )

        try:
            count = asyncio.run(send())
        except LineError as exc:
            raise Failed(
                f"{exc}; the {exc.published} event(s) before it were published, none after"
            ) from None
        except (EventBusError, ImportError, OSError) as exc:
            raise Failed(f"{exc}; {published} event(s) were published before it") from None
        progress.update(bar, completed=size or 0)
    click.echo(f"published {count} event(s)")
    return 0


def _file_size(source: BinaryIO) -> int | None:
    """Bytes in ``source`` when it is a regular file (a pipe has no size)."""
    try:
        found = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    return found.st_size if stat.S_ISREG(found.st_mode) else None


@cli.command()
@click.argument("topics", nargs=-1, metavar="[TOPIC]...")
@bus_option
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="GROUP",
    help="consumer group (lag and pending are per group); repeat for several",
)
@click.option(
    "--watch",
    is_flag=False,
    flag_value="2",
    callback=_interval,
    default=None,
    metavar="[SECONDS]",
    help="redraw every SECONDS (2 when omitted) until Ctrl-C or SIGTERM",
)
def stats(
    topics: tuple[str, ...], url: str | None, groups: tuple[str, ...], watch: float | None
) -> int:
    """Backlog per TOPIC (every topic the bus holds when none is named) and group: length,
    lag, pending, oldest pending age, dead letters."""
    if url is None:
        raise click.UsageError(f"give --bus URL or set {ENV_VAR}")
    wanted: list[str | None] = list(dict.fromkeys(groups)) or [None]
    title = f"backlog on {redact(url)}"
    out = Console()
    if watch is not None:
        _call_bus(
            url,
            lambda: watch_stats(url, topics, wanted, title=title, interval=watch, console=out),
        )
        return 0

    async def ask() -> list[BacklogStats]:
        async with create_bus(url) as bus:
            return await collect(bus, topics, wanted)

    out.print(stats_table(_call_bus(url, ask), title))
    return 0


@cli.command()
@click.argument("topic")
@bus_option
@click.option(
    "--from-beginning", is_flag=True, help="start at the oldest event held, not at the end"
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="stop after N events")
def tail(topic: str, url: str | None, from_beginning: bool, limit: int | None) -> int:
    """Print TOPIC's events as they arrive, one per line, without joining a consumer group
    (nothing is taken from consumers); until Ctrl-C or SIGTERM (exit 0) or --limit."""
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    _call_bus(
        url,
        lambda: tail_topic(
            url or "", topic, from_beginning=from_beginning, limit=limit, out=out, err=err
        ),
    )
    return 0


cli.add_command(dlq)


def _checked(make: Any) -> Any:
    try:
        return make()
    except EventBusError as exc:
        raise Failed(str(exc)) from None


def _call_bus(url: str | None, call: Any) -> Any:
    if url is None:
        raise click.UsageError(f"give --bus URL or set {ENV_VAR}")
    try:
        return asyncio.run(call())
    except (EventBusError, ImportError, OSError) as exc:
        raise Failed(str(exc)) from None


def run(argv: Sequence[str] | None = None) -> int:
    """Run :data:`cli`; click's errors become one ``dotmac-events: error: ...`` line."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name=PROG, standalone_mode=False)
    except click.ClickException as exc:
        print(f"{PROG}: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except click.Abort:
        print(f"{PROG}: aborted", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
