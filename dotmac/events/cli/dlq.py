"""``dotmac-events dlq list|show|replay|purge DLQ_TOPIC``: operate a dead-letter topic.

Everything reads the topic's log (:class:`~dotmac.events.dlq.DeadLetters`), so no consumer group
is joined and nothing is acked. Every error the user can cause is one line on stderr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from dotmac.events.dlq import DeadLetters, DLQEntry
from dotmac.events.errors import EventBusError
from dotmac.events.urls import ENV_VAR, create_bus

__all__ = ["dlq"]

T = TypeVar("T")
_url = click.option("--bus", "url", envvar=ENV_VAR, metavar="URL", help=f"bus URL [env {ENV_VAR}]")
_filters = [
    click.option("--error-type", help="only this error class (short or full name)"),
    click.option("--topic", "original_topic", help="only dead letters of this original topic"),
    click.option("--since", type=click.DateTime(), help="stored at or after (UTC)"),
    click.option("--until", type=click.DateTime(), help="stored before (UTC)"),
]


def _with_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_filters):
        command = option(command)
    return command


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def _run(url: str | None, dlq_topic: str, work: Callable[[DeadLetters], Awaitable[T]]) -> T:
    if not url:
        raise click.UsageError(f"give --bus URL or set {ENV_VAR}")

    async def main() -> T:
        bus = create_bus(url)
        try:
            return await work(DeadLetters(bus, dlq_topic))
        finally:
            await bus.close()

    try:
        return asyncio.run(main())
    except (EventBusError, ImportError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@click.group()
def dlq() -> None:
    """Operate a dead-letter topic: list, show, replay and purge its dead letters."""


@dlq.command("list")
@click.argument("dlq_topic")
@_url
@_with_filters
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def list_command(dlq_topic: str, url: str | None, limit: int, **filters: Any) -> None:
    """The newest dead letters of DLQ_TOPIC, newest first (and how many match)."""
    chosen = {**filters, "since": _utc(filters["since"]), "until": _utc(filters["until"])}

    async def work(view: DeadLetters) -> tuple[list[DLQEntry], int]:
        return await view.list(limit=limit, **chosen), await view.count(**chosen)

    entries, total = _run(url, dlq_topic, work)
    table = Table(title=f"{dlq_topic}: {total} dead letter(s), newest first")
    for column in ("id", "failed at", "topic", "group", "error", "attempts", "key", "replayed"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e.id or "-",
            _when(e.last_failure_at),
            e.original_topic,
            e.group,
            f"{e.error_type}: {e.error[:60]}",
            str(e.attempts),
            e.original_key or "-",
            _when(e.replayed_at) if e.replayed_at else "",
        )
    Console(highlight=False).print(table)


@dlq.command()
@click.argument("dlq_topic")
@click.argument("entry_id")
@_url
def show(dlq_topic: str, entry_id: str, url: str | None) -> None:
    """One dead letter: its failure, headers and the original event."""
    entry = _run(url, dlq_topic, lambda view: view.get(entry_id))
    out = Console(highlight=False, soft_wrap=True)
    table = Table(show_header=False, title=f"{dlq_topic} {entry.id}")
    table.add_column("field")
    table.add_column("value")
    rows = {
        "original topic": entry.original_topic,
        "group": entry.group,
        "error": f"{entry.error_class or entry.error_type}: {entry.error}",
        "attempts": str(entry.attempts),
        "first failure": _when(entry.first_failure_at),
        "last failure": _when(entry.last_failure_at),
        "key": entry.original_key or "-",
        "replayed": _when(entry.replayed_at) if entry.replayed_at else "no",
    }
    for name, value in rows.items():
        table.add_row(name, value)
    out.print(table)
    if entry.original_event is not None:
        event = entry.original_event
        shown = {"id": str(event.id), "payload": event.payload, "headers": dict(event.headers)}
        out.print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    else:
        out.print(f"undecodable original ({len(entry.original_data)} bytes):")
        out.print(repr(entry.original_data[:400]))


@dlq.command()
@click.argument("dlq_topic")
@click.argument("entry_ids", nargs=-1, metavar="[ENTRY_ID]...")
@_url
@_with_filters
@click.option("--all", "everything", is_flag=True, help="every matching dead letter")
@click.option("--rate", type=click.FloatRange(min=0.1), default=100.0, show_default=True)
@click.option("--force", is_flag=True, help="replay entries replayed before, again")
def replay(
    dlq_topic: str,
    entry_ids: tuple[str, ...],
    url: str | None,
    everything: bool,
    rate: float,
    force: bool,
    **filters: Any,
) -> None:
    """Write ENTRY_IDs' (or --all matching) originals back to their topics, each once."""
    if bool(entry_ids) == everything:
        raise click.UsageError("give ENTRY_IDs or --all (not both)")
    chosen = {**filters, "since": _utc(filters["since"]), "until": _utc(filters["until"])}
    err = Console(stderr=True, highlight=False)
    progress = Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
    )

    async def work(view: DeadLetters) -> Any:
        task = progress.add_task("replay", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        with progress:
            return await view.replay(
                list(entry_ids) or None, rate=rate, force=force, progress=advance, **chosen
            )

    report = _run(url, dlq_topic, work)
    click.echo(
        f"replayed {len(report.replayed)}, skipped {len(report.skipped)} replayed before "
        f"(replay id {report.replay_id})"
    )


@dlq.command()
@click.argument("dlq_topic")
@click.argument("entry_ids", nargs=-1, metavar="[ENTRY_ID]...")
@_url
@click.option("--all", "everything", is_flag=True, help="every dead letter the topic holds")
@click.option("--yes", is_flag=True, help="do not ask")
def purge(
    dlq_topic: str, entry_ids: tuple[str, ...], url: str | None, everything: bool, yes: bool
) -> None:
    """Delete ENTRY_IDs, or --all. Kafka deletes only whole topics (DeleteRecords)."""
    if bool(entry_ids) == everything:
        raise click.UsageError("give ENTRY_IDs or --all (not both)")
    if everything and not yes:
        click.confirm(f"delete every dead letter on {dlq_topic}?", abort=True)
    ids = list(entry_ids) or None
    deleted = _run(url, dlq_topic, lambda view: view.purge(ids))
    click.echo(f"deleted {deleted} dead letter(s)")
