"""The Observer protocol: hooks the bus calls on every path, once, above the transports.

An observer sees each publish and each handling through a context manager (so tracing can keep a
span current around the send or the handler, and metrics can time it), plus point events for
retries, dead letters and errors. Observers must not raise; several combine with CompositeObserver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from dotmac.events.event import Event

__all__ = ["CompositeObserver", "NoopObserver", "Observer"]


@runtime_checkable
class Observer(Protocol):
    """Receives what happens on a bus. Every method must be cheap and must not raise."""

    def publishing(
        self, event: Event, *, adapter: str
    ) -> AbstractContextManager[Mapping[str, str]]:
        """Wraps one publish. Yields headers to add to the event (trace context); an exception
        leaving the block is the publish failing."""
        ...

    def consuming(self, event: Event, *, group: str, adapter: str) -> AbstractContextManager[None]:
        """Wraps one handler call. An exception leaving the block is the handler failing."""
        ...

    def retried(
        self,
        event: Event,
        *,
        group: str,
        adapter: str,
        attempt: int,
        delay: float,
        error: BaseException,
    ) -> None:
        """A failed event will be delivered again after ``delay`` seconds."""
        ...

    def dead_lettered(
        self,
        topic: str,
        *,
        group: str,
        adapter: str,
        dlq_topic: str,
        attempts: int,
        error: BaseException,
        event: Event | None,
    ) -> None:
        """A message went to ``dlq_topic`` (``event`` is None when it could not be decoded)."""
        ...

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        """Something went wrong outside a handler (fetch, ack, a message lost to trimming)."""
        ...


_NO_HEADERS: Mapping[str, str] = {}
T = TypeVar("T")


class _Nothing(Generic[T]):
    """A context manager that does nothing. Observers return the two shared ones below for a
    call they have nothing to do for, and CompositeObserver skips those without entering them."""

    __slots__ = ("_entered",)

    def __init__(self, entered: T) -> None:
        self._entered = entered

    def __enter__(self) -> T:
        return self._entered

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


NOTHING_TO_PUBLISH: _Nothing[Mapping[str, str]] = _Nothing(_NO_HEADERS)
NOTHING_TO_CONSUME: _Nothing[None] = _Nothing(None)


class NoopObserver:
    """The default: observes nothing, costs next to nothing."""

    def publishing(
        self, event: Event, *, adapter: str
    ) -> AbstractContextManager[Mapping[str, str]]:
        return NOTHING_TO_PUBLISH

    def consuming(self, event: Event, *, group: str, adapter: str) -> AbstractContextManager[None]:
        return NOTHING_TO_CONSUME

    def retried(
        self,
        event: Event,
        *,
        group: str,
        adapter: str,
        attempt: int,
        delay: float,
        error: BaseException,
    ) -> None:
        return None

    def dead_lettered(
        self,
        topic: str,
        *,
        group: str,
        adapter: str,
        dlq_topic: str,
        attempts: int,
        error: BaseException,
        event: Event | None,
    ) -> None:
        return None

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        return None


class CompositeObserver:
    """Fans every hook out to several observers, in order."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)

    def publishing(self, event: Event, *, adapter: str) -> _Publishing:
        return _Publishing(self.observers, event, adapter)

    def consuming(self, event: Event, *, group: str, adapter: str) -> _Consuming:
        return _Consuming(self.observers, event, group, adapter)

    def retried(
        self,
        event: Event,
        *,
        group: str,
        adapter: str,
        attempt: int,
        delay: float,
        error: BaseException,
    ) -> None:
        for observer in self.observers:
            observer.retried(
                event, group=group, adapter=adapter, attempt=attempt, delay=delay, error=error
            )

    def dead_lettered(
        self,
        topic: str,
        *,
        group: str,
        adapter: str,
        dlq_topic: str,
        attempts: int,
        error: BaseException,
        event: Event | None,
    ) -> None:
        for observer in self.observers:
            observer.dead_lettered(
                topic,
                group=group,
                adapter=adapter,
                dlq_topic=dlq_topic,
                attempts=attempts,
                error=error,
                event=event,
            )

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        for observer in self.observers:
            observer.error(topic, adapter=adapter, where=where, error=error)


class _Nested:
    """Enters each observer's context manager in order (each observer's ``publishing()`` or
    ``consuming()`` is called once the one before it is entered, so it runs inside it) and
    exits them in reverse, as ``contextlib.ExitStack`` would: an exception raised by an exit
    goes to the exits after it and then propagates. The shared no-ops are skipped."""

    __slots__ = ("_entered", "_event", "_observers")

    def __init__(self, observers: tuple[Observer, ...], event: Event) -> None:
        self._observers = observers
        self._event = event
        self._entered: list[AbstractContextManager[Any]] = []

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        pending = exc
        for manager in reversed(self._entered):
            try:
                if pending is None:
                    manager.__exit__(None, None, None)
                elif manager.__exit__(type(pending), pending, pending.__traceback__):
                    pending = None
            except BaseException as raised:
                if raised.__context__ is None and raised is not pending:
                    raised.__context__ = pending
                pending = raised
        if pending is not None and pending is not exc:
            raise pending
        return exc is not None and pending is None

    def _unwind(self, exc: BaseException) -> None:
        """An enter failed: exit what was entered with that exception (it then propagates)."""
        self._entered.reverse()
        for manager in self._entered:
            manager.__exit__(type(exc), exc, exc.__traceback__)
        self._entered.clear()


class _Publishing(_Nested):
    __slots__ = ("_adapter",)

    def __init__(self, observers: tuple[Observer, ...], event: Event, adapter: str) -> None:
        super().__init__(observers, event)
        self._adapter = adapter

    def __enter__(self) -> Mapping[str, str]:
        headers: dict[str, str] | None = None
        try:
            for observer in self._observers:
                manager = observer.publishing(self._event, adapter=self._adapter)
                if manager is NOTHING_TO_PUBLISH:
                    continue
                extra = manager.__enter__()
                self._entered.append(manager)
                if extra:
                    if headers is None:
                        headers = {}
                    headers.update(extra)
        except BaseException as exc:
            self._unwind(exc)
            raise
        return _NO_HEADERS if headers is None else headers


class _Consuming(_Nested):
    __slots__ = ("_adapter", "_group")

    def __init__(
        self, observers: tuple[Observer, ...], event: Event, group: str, adapter: str
    ) -> None:
        # _Nested.__init__ inlined: this runs on every handler call.
        self._observers = observers
        self._event = event
        self._entered = []
        self._group = group
        self._adapter = adapter

    def __enter__(self) -> None:
        try:
            for observer in self._observers:
                manager = observer.consuming(self._event, group=self._group, adapter=self._adapter)
                if manager is NOTHING_TO_CONSUME:
                    continue
                manager.__enter__()
                self._entered.append(manager)
        except BaseException as exc:
            self._unwind(exc)
            raise
