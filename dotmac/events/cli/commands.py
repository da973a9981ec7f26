"""The click commands. Every error the user can cause ends as one line on stderr, no traceback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from dotmac.events.cli.demo import print_summary, run_demo
from dotmac.events.cli.worker import WorkerError, configure_logging, run_worker
from dotmac.events.errors import EventBusError
from dotmac.events.event import Event
from dotmac.events.urls import ENV_VAR, create_bus, redact

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


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
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
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker(target: str, url: str | None, drain_timeout: float, log_level: str) -> int:
    """Run the EventRouter MODULE:ATTRIBUTE (or MODULE's @event_handler functions) on a bus.

    The first SIGTERM/SIGINT stops fetching and drains running handlers for up to
    --drain-timeout seconds (exit 0); what did not finish stays unacknowledged (exit 3).
    A second signal exits at once (exit 4).
    """
    if url is None:
        raise click.UsageError(f"give --bus URL or set {ENV_VAR}")
    configure_logging(log_level)
    try:
        return run_worker(target, url, drain_timeout)
    except WorkerError as exc:
        raise Failed(str(exc)) from None


@cli.command()
@click.argument("topic")
@click.argument("payload", metavar="JSON")
@bus_option
@click.option("--key", default=None, help="partition / ordering key")
def publish(topic: str, payload: str, url: str | None, key: str | None) -> int:
    """Publish one event with the JSON object PAYLOAD to TOPIC; prints its id."""
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


@cli.command()
@click.argument("topic")
@bus_option
@click.option("--group", default=None, help="consumer group (lag and pending are per group)")
def stats(topic: str, url: str | None, group: str | None) -> int:
    """Backlog of TOPIC: length, lag, pending, oldest pending age, dead letters."""

    async def ask() -> Any:
        async with create_bus(url) as bus:
            return await bus.stats(topic, group)

    found = _call_bus(url, ask)
    table = Table(title=f"{topic} ({group or 'no group'}) on {redact(url or '')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("length", "lag", "pending", "oldest_pending_age", "dlq_depth"):
        value = getattr(found, name)
        shown = "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        table.add_row(name, shown)
    Console().print(table)
    return 0


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
