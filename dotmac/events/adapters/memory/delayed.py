"""Delayed events of the in-process broker, with a clock tests can move.

Held events sit in a heap by due time; one loop timer is armed for the earliest. The clock is
``time.time()`` plus an offset that :meth:`DelayedEvents.advance` raises, so a test can publish
with ``delay=3600`` and release it with ``await bus.advance(3600)`` instead of waiting. Nothing
here survives the process: the memory bus keeps nothing across restarts.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

__all__ = ["DelayedEvents"]

Release = Callable[[str, bytes, str | None], None]
"""``release(topic, data, key)``: append a due event to its topic."""


class DelayedEvents:
    """The broker's held events; shared by every client bus of one broker."""

    def __init__(self, release: Release) -> None:
        self._release = release
        self.offset = 0.0  # seconds the clock was advanced by
        self._heap: list[tuple[float, int, str, bytes, str | None]] = []
        self._order = itertools.count()  # equal due times leave in the order they came
        self._timer: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return time.time() + self.offset

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, topic: str, items: list[tuple[bytes, str | None]], due: float) -> None:
        for data, key in items:
            heapq.heappush(self._heap, (due, next(self._order), topic, data, key))
        self._arm()

    def advance(self, seconds: float) -> int:
        """Move the clock forward and release what became due; returns how many."""
        self.offset += seconds
        return self.release_due()

    def release_due(self) -> int:
        heap, now, released = self._heap, self.now(), 0
        while heap and heap[0][0] <= now:
            _, _, topic, data, key = heapq.heappop(heap)
            self._release(topic, data, key)
            released += 1
        self._arm()
        return released

    def _arm(self) -> None:
        """One timer, for the earliest due event (re-armed after every change)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap:
            loop = asyncio.get_running_loop()
            wait = max(self._heap[0][0] - self.now(), 0.0)
            self._timer = loop.call_later(wait, self.release_due)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
