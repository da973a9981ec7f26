"""Timed: the context manager the metric and log observers hand back from ``publishing()`` and
``consuming()``.

It reads the clock on entry and, on exit, passes the elapsed seconds and the exception leaving
the block (None on success) to a callback, followed by the arguments it was made with. It runs
on every publish and every handler call, so it is one slotted object and no closure per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar, TypeVarTuple

__all__ = ["Timed"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Timed(Generic[T, *Ts]):
    """``with Timed(done, entered, *args) as value``: ``value`` is ``entered``; on exit it calls
    ``done(elapsed_seconds, exc_or_none, *args)``.

    The clock is a class attribute (a subclass may read another), not an argument: passing
    it on every call would cost more than the rest of the object.
    """

    __slots__ = ("_args", "_done", "_entered", "_start")

    clock = staticmethod(time.perf_counter)

    def __init__(
        self,
        done: Callable[[float, BaseException | None, *Ts], None],
        entered: T,
        *args: *Ts,
    ) -> None:
        self._done = done
        self._entered = entered
        self._args = args
        self._start = 0.0

    def __enter__(self) -> T:
        self._start = self.clock()
        return self._entered

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done(self.clock() - self._start, exc, *self._args)
