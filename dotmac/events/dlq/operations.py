"""Operating a dead-letter topic: count, list, show, replay and purge, without consuming it.

:class:`DeadLetters` reads the topic's log (``bus.read_records``: no group joined, nothing
acked), so what it shows survives restarts and any number of processes can look at once.
Replay writes each original record back to its original topic as it was (bytes, key, headers)
plus ``dotmac-replayed-from`` and ``dotmac-replay-id``, at most ``rate`` records a second.
Replaying is idempotent per entry: after each replay a marker naming the entry is appended to
the internal topic ``_dlq-replayed.<dlq topic>``, and entries with a marker are skipped (a
crash between the replay and its marker replays that one entry again on the next run: at least
once). Markers are kept rather than the entries purged because Kafka cannot delete one record.
"""

from __future__ import annotations

import asyncio
import heapq
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import orjson

import dotmac.events.dlq.headers as h
from dotmac.events.bus import EventBus
from dotmac.events.dlq.entry import DLQEntry
from dotmac.events.errors import ConfigurationError, DecodeError, UnsupportedOperation


@runtime_checkable
class RecordStore(Protocol):
    """What replay and purge need of a bus beyond the EventBus contract: writing a record as it
    is and deleting records. The engine's TransportBus has it (its transports may still refuse
    with UnsupportedOperation); named here so this package never imports the engine, which
    imports it."""

    async def send_record(
        self,
        topic: str,
        data: bytes,
        key: str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None: ...

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int: ...

    async def _delete_all(self, topic: str) -> None: ...


__all__ = ["DeadLetters", "ReplayReport", "SimpleDLQ", "replay_marker_topic"]


def replay_marker_topic(dlq_topic: str) -> str:
    """The internal topic remembering which entries of ``dlq_topic`` were replayed."""
    return f"_dlq-replayed.{dlq_topic}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    """What a replay did: ``replayed`` entry ids, ``skipped`` ones replayed before."""

    replay_id: str
    replayed: list[str]
    skipped: list[str]


def _matches(entry: DLQEntry, error_type: str | None, original_topic: str | None) -> bool:
    if original_topic is not None and entry.original_topic != original_topic:
        return False
    return error_type is None or error_type in (entry.error_type, entry.error_class)


class DeadLetters:
    """The dead letters of ``dlq_topic`` on ``bus``, read from the log.

    Filters: ``error_type`` (the class name, short or full), ``original_topic``, and
    ``since``/``until`` (datetimes: when the dead letter was stored). Records on the topic
    that are not dead letters are left out.
    """

    def __init__(self, bus: EventBus, dlq_topic: str) -> None:
        if not isinstance(dlq_topic, str) or not dlq_topic:
            raise ConfigurationError("dlq_topic", f"must be a non-empty str, got {dlq_topic!r}")
        self.bus = bus
        self.dlq_topic = dlq_topic
        self._markers = replay_marker_topic(dlq_topic)

    async def entries(
        self,
        *,
        error_type: str | None = None,
        original_topic: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[DLQEntry]:
        """Matching entries, oldest first, each with ``replayed_at`` when it was replayed."""
        replayed = await self._replayed()
        codec = getattr(self.bus, "codec", None)
        async for record in self.bus.read_records(self.dlq_topic, since=since, until=until):
            try:
                entry = DLQEntry.from_record(record, codec)
            except DecodeError:
                continue
            if _matches(entry, error_type, original_topic):
                when = replayed.get(entry.id or "")
                yield entry if when is None else replace(entry, replayed_at=when)

    async def count(
        self,
        *,
        error_type: str | None = None,
        original_topic: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many entries match (a scan of the topic)."""
        found = 0
        async for _ in self.entries(
            error_type=error_type, original_topic=original_topic, since=since, until=until
        ):
            found += 1
        return found

    async def list(
        self,
        *,
        limit: int | None = 50,
        error_type: str | None = None,
        original_topic: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DLQEntry]:
        """The newest ``limit`` matching entries (None: all), newest first."""
        wrong = isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        if limit is not None and wrong:
            raise ConfigurationError("limit", f"must be an int >= 1 or None, got {limit!r}")
        # By failure time, not read order: a Kafka DLQ topic's partitions are read one after
        # another, so the log's order is not the order the entries were written in.
        newest: list[tuple[datetime, int, DLQEntry]] = []
        seen = 0
        async for entry in self.entries(
            error_type=error_type, original_topic=original_topic, since=since, until=until
        ):
            seen += 1
            item = (entry.last_failure_at, seen, entry)
            if limit is None or len(newest) < limit:
                heapq.heappush(newest, item)
            else:
                heapq.heappushpop(newest, item)
        return [entry for _, _, entry in sorted(newest, reverse=True)]

    async def get(self, entry_id: str) -> DLQEntry:
        """The entry at position ``entry_id``.

        Raises:
            ConfigurationError: no dead letter has that id (naming ``entry_id``).
        """
        async for entry in self.entries():
            if entry.id == entry_id:
                return entry
        raise ConfigurationError("entry_id", f"no dead letter {entry_id!r} on {self.dlq_topic!r}")

    async def replay(
        self,
        ids: Iterable[str] | None = None,
        *,
        error_type: str | None = None,
        original_topic: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        rate: float | None = 100.0,
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReplayReport:
        """Write the chosen entries' originals back to their original topics, oldest first.

        ``ids`` chooses entries by id; without it, every entry matching the filters. Entries
        replayed before are skipped unless ``force``. ``rate`` caps records per second (None:
        no cap). ``progress(done, total)`` is called after each entry.

        Raises:
            ConfigurationError: an id names no dead letter, or ``rate`` is not > 0.
            UnsupportedOperation: the bus cannot write records with headers.
        """
        if rate is not None and (isinstance(rate, bool) or not rate > 0):
            raise ConfigurationError("rate", f"must be > 0 or None, got {rate!r}")
        bus = self._transport("replay")
        wanted = None if ids is None else list(dict.fromkeys(ids))
        matching = self.entries(
            error_type=error_type, original_topic=original_topic, since=since, until=until
        )
        chosen = [e async for e in matching if wanted is None or e.id in wanted]
        if wanted is not None:
            missing = sorted(set(wanted) - {e.id for e in chosen})
            if missing:
                raise ConfigurationError("ids", f"no dead letter {missing} on {self.dlq_topic!r}")
        replay_id = uuid.uuid4().hex
        report = ReplayReport(replay_id=replay_id, replayed=[], skipped=[])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for done, entry in enumerate(chosen, 1):
            entry_id = entry.id or ""
            if entry.replayed_at is not None and not force:
                report.skipped.append(entry_id)
            else:
                if rate is not None:
                    due = start + len(report.replayed) / rate
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                marks = [(h.REPLAYED_FROM, f"{self.dlq_topic}@{entry_id}".encode())]
                marks.append((h.REPLAY_ID, replay_id.encode()))
                await bus.send_record(
                    entry.original_topic,
                    entry.original_data,
                    entry.original_key,
                    [*entry.original_headers, *marks],
                )
                at = datetime.now(UTC).isoformat()
                marker = orjson.dumps({"id": entry_id, "replay_id": replay_id, "at": at})
                await bus.send_record(self._markers, marker, entry_id)
                report.replayed.append(entry_id)
            if progress is not None:
                progress(done, len(chosen))
        return report

    async def purge(self, ids: Iterable[str] | None = None) -> int:
        """Delete the given entries, or (``ids`` None) every entry the topic holds now and the
        replay markers; returns how many entries were deleted.

        Raises:
            UnsupportedOperation: the transport cannot delete them (Kafka deletes only whole
                prefixes of a partition, so only ``purge()`` of everything works there).
        """
        bus = self._transport("purge")
        if ids is not None:
            return await bus._delete_records(self.dlq_topic, list(ids))
        held = 0
        async for _ in self.bus.read_records(self.dlq_topic):
            held += 1
        await bus._delete_all(self.dlq_topic)
        await bus._delete_all(self._markers)
        return held

    async def _replayed(self) -> dict[str, datetime]:
        """Entry id -> when it was replayed, from the marker topic."""
        found: dict[str, datetime] = {}
        try:
            async for record in self.bus.read_records(self._markers):
                try:
                    marker = orjson.loads(record.data)
                    found[str(marker["id"])] = datetime.fromisoformat(marker["at"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        except UnsupportedOperation:
            return {}
        return found

    def _transport(self, doing: str) -> RecordStore:
        if not isinstance(self.bus, RecordStore):
            raise UnsupportedOperation(f"{doing} needs a transport bus, got {type(self.bus)}")
        return self.bus


class SimpleDLQ:
    """A small view of a dead-letter topic: ``entries()``, ``replay(id)``, ``remove(id)``.

    A thin layer on :class:`DeadLetters`: it reads the topic each time, so it shows what the
    broker holds (after a restart too) and acks nothing. ``start``/``close`` are kept for code
    written against the first version and do nothing.
    """

    def __init__(self, bus: EventBus, dlq_topic: str, *, group: str = "simple-dlq") -> None:
        self.bus = bus
        self.dlq_topic = dlq_topic
        self.group = group
        self.dead_letters = DeadLetters(bus, dlq_topic)

    async def start(self) -> SimpleDLQ:
        return self

    async def entries(self) -> list[DLQEntry]:
        """Entries not replayed yet, oldest failure first."""
        held = [e async for e in self.dead_letters.entries() if e.replayed_at is None]
        return sorted(held, key=lambda e: e.last_failure_at)

    async def remove(self, entry_id: str) -> DLQEntry:
        """Delete one entry. Raises KeyError when it is not held; UnsupportedOperation on Kafka."""
        try:
            entry = await self.dead_letters.get(entry_id)
        except ConfigurationError as exc:
            raise KeyError(entry_id) from exc
        await self.dead_letters.purge([entry_id])
        return entry

    async def replay(self, entry_id: str) -> None:
        """Replay one entry's original (it then no longer shows in ``entries()``).
        Raises KeyError when it is not held."""
        try:
            await self.dead_letters.replay([entry_id], rate=None)
        except ConfigurationError as exc:
            raise KeyError(entry_id) from exc

    async def close(self) -> None:
        return None
