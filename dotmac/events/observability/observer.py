"""The Observer protocol: hooks the bus calls on every path, once, above the transports.

An observer sees each publish and each handling through a context manager (so tracing can keep a
span current around the send or the handler, and metrics can time it), plus point events for
retries, dead letters and errors. Observers must not raise; several combine with CompositeObserver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

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


class NoopObserver:
    """The default: observes nothing, costs next to nothing."""

    def publishing(
        self, event: Event, *, adapter: str
    ) -> AbstractContextManager[Mapping[str, str]]:
        return contextlib.nullcontext(_NO_HEADERS)

    def consuming(self, event: Event, *, group: str, adapter: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

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

    @contextlib.contextmanager
    def publishing(self, event: Event, *, adapter: str) -> Iterator[Mapping[str, str]]:
        with contextlib.ExitStack() as stack:
            headers: dict[str, str] = {}
            for observer in self.observers:
                headers.update(stack.enter_context(observer.publishing(event, adapter=adapter)))
            yield headers

    @contextlib.contextmanager
    def consuming(self, event: Event, *, group: str, adapter: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for observer in self.observers:
                stack.enter_context(observer.consuming(event, group=group, adapter=adapter))
            yield

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
