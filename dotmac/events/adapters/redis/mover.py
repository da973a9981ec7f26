"""The loop both Redis delay movers run (single server and Cluster): one pass, then sleep until
the next event is due or the poll interval passes, woken early by a poke.

A failed pass is reported and retried with backoff: the events wait in Redis, nothing is lost.
``stop()`` lets the pass in flight finish, since cancelling a command or pipeline mid-way could
leave its pooled connection half-used; a pass that hangs is cancelled after a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable

from dotmac.events.backoff import ExponentialBackoff

__all__ = ["MoverLoop"]

_ERROR_BACKOFF = ExponentialBackoff(base_ms=100, max_ms=5_000)
_STOP_GRACE = 2.0  # seconds stop() lets a pass in flight finish


class MoverLoop(ABC):
    """Runs :meth:`move_once` until stopped; subclasses say what one pass does."""

    def __init__(
        self, *, name: str, poll_interval: float, report: Callable[[str, BaseException], None]
    ) -> None:
        self._name = name
        self._poll = poll_interval
        self._report = report
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.moved = 0

    @abstractmethod
    async def move_once(self) -> float:
        """Move what is due; return seconds until the next pass (at most the poll interval)."""

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self._name)

    def poke(self) -> None:
        """Something may be due soon: look now instead of at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()  # before the pass: a poke during it is not lost
            try:
                wait = await self.move_once()
            except Exception as exc:
                if self._stopping:
                    return
                failures += 1
                self._report("delay mover", exc)
                await self._pause(_ERROR_BACKOFF.delay(failures))
                continue
            failures = 0
            if wait > 0:
                await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def stop(self) -> None:
        """Stop after the pass in flight (see the module docstring)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        _, late = await asyncio.wait([task], timeout=_STOP_GRACE)
        if late:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
