"""The in-process broker's state: a log per topic, and per group its cursor, pending table and
the receivers waiting for work. The bus, its receivers and its log reader drive it; it imports
none of them."""

from __future__ import annotations

import asyncio
from array import array
from collections import deque
from collections.abc import Iterable
from heapq import heappop
from time import time
from typing import Protocol

__all__ = ["Group", "Sleeper", "Topic"]


class Sleeper(Protocol):
    """A receiver blocked in fetch; ``wake()`` returns False when it no longer waits."""

    def wake(self) -> bool: ...


class Group:
    __slots__ = (
        "counts",
        "cursor",
        "first_handed",
        "handed",
        "low",
        "members",
        "private",
        "returned",
        "sleepers",
    )

    def __init__(self, cursor: int, *, private: bool) -> None:
        self.cursor = cursor  # next offset never handed out
        self.counts: dict[int, int] = {}  # handed out and not acked -> delivery count
        # Min-heap over the offsets in ``counts``; acked ones are dropped when they reach the top.
        # Offsets are pushed in increasing order, so a push costs one comparison.
        self.handed: list[int] = []
        self.returned: list[int] = []  # heap of offsets given back (still in ``counts``)
        self.low = cursor  # the lowest offset this group still needs: min(cursor, counts)
        self.private = private
        self.members = 0
        self.sleepers: deque[Sleeper] = deque()  # receivers blocked in fetch, in order
        # (first offset, monotonic time) per fetch of new offsets, in offset order: an offset was
        # first handed out when the last entry starting at or below it was made. One entry per
        # fetch, not per message; entries wholly below ``low`` are dropped as new ones come.
        self.first_handed: deque[tuple[int, float]] = deque()

    def handing_out(self, start: int, now: float) -> None:
        """Offsets from ``start`` on are handed out for the first time at ``now``."""
        first = self.first_handed
        while first and first[-1][0] >= start:  # after a rewind: they count from now
            first.pop()
        while len(first) > 1 and first[1][0] <= self.low:
            first.popleft()
        first.append((start, now))

    def oldest_pending_since(self) -> float | None:
        """When the oldest offset handed out and not acked was first handed out (monotonic
        time), or None when nothing is."""
        oldest = self.floor()
        if oldest >= self.cursor:
            return None
        since = None
        for start, at in self.first_handed:
            if start > oldest:
                break
            since = at
        return since

    def floor(self) -> int:
        handed, counts = self.handed, self.counts
        while handed and handed[0] not in counts:
            heappop(handed)
        return handed[0] if handed and handed[0] < self.cursor else self.cursor

    def has_work(self, end: int) -> bool:
        return bool(self.returned) or self.cursor < end


class Topic:
    __slots__ = (
        "base",
        "clock",
        "data",
        "end",
        "expiry",
        "floor",
        "granted",
        "groups",
        "headers",
        "hungry",
        "keep_all",
        "keys",
        "limit",
        "origin",
        "publishers",
        "purged",
        "readers",
        "times",
    )

    def __init__(self, limit: int, *, keep_all: bool) -> None:
        self.limit = limit
        self.keep_all = keep_all
        # The log: offset ``o`` is at index ``o - origin`` of both lists. Trimmed slots before
        # ``base`` are blanked (their bytes freed) and cut off once they are half the list.
        self.data: list[bytes] = []
        self.keys: list[str | None] = []
        # Append times (seconds since the epoch), 8 B per event, so a read can start at a time.
        self.times = array("d")
        # Transport headers by offset, only for records written with some (dead letters and
        # their replays), and offsets deleted one by one: none of it costs a plain event anything.
        self.headers: dict[int, tuple[tuple[str, bytes], ...]] = {}
        self.purged: set[int] = set()
        self.origin = 0  # offset of data[0]
        self.base = 0  # oldest offset held
        self.end = 0  # offset the next event gets
        self.groups: dict[str, Group] = {}
        self.floor = 0  # min(group.low); meaningless while there is no group
        self.hungry: dict[Group, None] = {}  # groups with a receiver blocked in fetch
        self.readers: list[asyncio.Future[None]] = []  # log readers following the topic
        # Publishers waiting for room, in order, with their deadlines: one timer for all of them
        # (``expiry``, armed for the first deadline), not one per wait.
        self.publishers: deque[tuple[asyncio.Future[bool], float]] = deque()
        self.granted = 0  # slots promised to woken publishers that have not appended yet
        self.expiry: asyncio.TimerHandle | None = None
        self.clock: asyncio.AbstractEventLoop | None = None  # the loop ``expiry`` runs on

    def unconsumed(self) -> int:
        return self.end - self.floor if self.groups else 0

    def has_room(self) -> bool:
        return not self.groups or self.end + self.granted - self.floor < self.limit

    def held(self) -> list[bytes]:
        return self.data[self.base - self.origin :]

    def append(self, data: bytes, key: str | None) -> None:
        self.data.append(data)
        self.keys.append(key)
        self.times.append(time())
        self.end += 1
        if self.hungry:
            for group in list(self.hungry):
                self.wake_one(group)
        if self.readers:
            self.wake_readers()
        if not self.groups and not self.keep_all and self.end - self.base > self.limit:
            self._trim_to(self.end - self.limit)

    def append_record(
        self, data: bytes, key: str | None, headers: tuple[tuple[str, bytes], ...]
    ) -> None:
        """Append a record with transport headers."""
        if headers:
            self.headers[self.end] = headers
        self.append(data, key)

    def purge(self, offsets: Iterable[int]) -> int:
        """Delete held records: readers and groups skip them from now on. Returns how many of
        ``offsets`` were held and not deleted yet."""
        fresh = {o for o in offsets if self.base <= o < self.end and o not in self.purged}
        self.purged |= fresh
        return len(fresh)

    def refloor(self) -> None:
        """Recompute the floor after a group moved or left; trim and let publishers in when it
        rose."""
        if not self.groups:
            if not self.keep_all:
                self._trim_to(self.end - self.limit)
            self.grant()
            return
        groups = self.groups
        old = self.floor
        if len(groups) == 1:
            self.floor = next(iter(groups.values())).low
        else:
            self.floor = min(g.low for g in groups.values())
        if self.floor > old:
            if not self.keep_all:
                self._trim_to(self.floor)
            self.grant()

    def group_moved(self, group: Group) -> None:
        """``group`` acked: recompute its floor, and the topic's when it was the lowest."""
        old, group.low = group.low, group.floor()
        if group.low != old and old == self.floor:
            self.refloor()

    def _trim_to(self, offset: int) -> None:
        if offset <= self.base:
            return
        data, keys = self.data, self.keys
        start, stop = self.base - self.origin, offset - self.origin
        if stop * 2 >= len(data):  # the blanked head would be half the list: cut it off
            del data[:stop]
            del keys[:stop]
            del self.times[:stop]
            self.origin = offset
        else:
            data[start:stop] = [b""] * (stop - start)
            keys[start:stop] = [None] * (stop - start)
        self.base = offset
        if self.headers:
            for gone in [o for o in self.headers if o < offset]:
                del self.headers[gone]
        if self.purged:
            self.purged = {o for o in self.purged if o >= offset}

    def grant(self) -> None:
        """Wake waiting publishers, first come first served, one per free slot."""
        publishers = self.publishers
        while publishers and self.has_room():
            waiter = publishers.popleft()[0]
            if not waiter.done():
                waiter.set_result(True)
                self.granted += 1

    def wait_for_room(self, timeout: float) -> asyncio.Future[bool]:
        """Queue a publisher: the future is True once a slot is its, False past ``timeout``."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        deadline = loop.time() + timeout
        self.publishers.append((waiter, deadline))
        if self.expiry is None or self.clock is not loop:
            self.clock = loop
            self.expiry = loop.call_at(deadline, self._expire)
        return waiter

    def _expire(self) -> None:
        """Fail the publishers whose deadline passed; re-arm for the next deadline."""
        self.expiry = None
        loop = self.clock
        if loop is None:
            return
        publishers, soon = self.publishers, loop.time() + 0.001
        while publishers:
            waiter, deadline = publishers[0]
            if not waiter.done():
                if deadline > soon:
                    self.expiry = loop.call_at(deadline, self._expire)
                    return
                waiter.set_result(False)
            publishers.popleft()

    def forget(self, waiter: asyncio.Future[bool]) -> None:
        """A publisher stopped waiting (cancelled). A slot it was promised goes to the next."""
        if waiter.done() and not waiter.cancelled() and waiter.result():
            self.granted -= 1
            self.grant()
            return
        for index, (queued, _) in enumerate(self.publishers):
            if queued is waiter:
                del self.publishers[index]
                return

    def wake_readers(self) -> None:
        readers, self.readers = self.readers, []
        for reader in readers:
            if not reader.done():
                reader.set_result(None)

    def wake_one(self, group: Group) -> None:
        sleepers = group.sleepers
        while sleepers:
            if sleepers.popleft().wake():
                break
        if not sleepers:
            self.hungry.pop(group, None)

    def pass_on(self, group: Group) -> None:
        """Wake the next sleeper of ``group`` when there is work no one awake will take."""
        if group.sleepers and group.has_work(self.end):
            self.wake_one(group)
