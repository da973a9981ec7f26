"""LoggingObserver: one log line per thing worth a human's attention.

Successful publishes and handler calls log at DEBUG (a single ``isEnabledFor`` check when DEBUG
is off). A failed handler call logs once, saying what follows: a retry at WARNING, a dead letter
at ERROR. A failed publish logs at WARNING.
Payloads, keys and headers are never logged: they may hold personal data or secrets. Errors
outside handlers are already logged by the consumer engine, so they only go out at DEBUG here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from types import TracebackType

from dotmac.events.event import Event

__all__ = ["LoggingObserver"]

_NO_HEADERS: Mapping[str, str] = {}


class LoggingObserver:
    """An Observer writing to ``logger`` (default ``dotmac.events.hooks``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("dotmac.events.hooks")

    def publishing(self, event: Event, *, adapter: str) -> _LoggedPublish:
        return _LoggedPublish(self.logger, event, adapter)

    def consuming(self, event: Event, *, group: str, adapter: str) -> _LoggedConsume:
        return _LoggedConsume(self.logger, event, group, adapter)

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
        self.logger.warning(
            "%s: event %s on %s (group %s) failed attempt %d, retrying in %.3fs: %r",
            adapter,
            event.id,
            event.topic,
            group,
            attempt,
            delay,
            error,
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
        self.logger.error(
            "%s: event %s on %s (group %s) dead-lettered to %s after %d attempt(s): %r",
            adapter,
            event.id if event else "<undecodable>",
            topic,
            group,
            dlq_topic,
            attempts,
            error,
        )

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        self.logger.debug("%s: %s failed on %s: %r", adapter, where, topic, error)


class _LoggedPublish:
    __slots__ = ("_adapter", "_event", "_logger", "_start")

    def __init__(self, logger: logging.Logger, event: Event, adapter: str) -> None:
        self._logger = logger
        self._event = event
        self._adapter = adapter
        self._start = 0.0

    def __enter__(self) -> Mapping[str, str]:
        self._start = time.perf_counter()
        return _NO_HEADERS

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event = self._event
        if exc is None:
            if self._logger.isEnabledFor(logging.DEBUG):
                self._logger.debug(
                    "%s: published %s to %s in %.3fms",
                    self._adapter,
                    event.id,
                    event.topic,
                    (time.perf_counter() - self._start) * 1000,
                )
        elif isinstance(exc, Exception):
            self._logger.warning(
                "%s: publish of %s to %s failed: %r", self._adapter, event.id, event.topic, exc
            )


class _LoggedConsume:
    __slots__ = ("_adapter", "_event", "_group", "_logger", "_start")

    def __init__(self, logger: logging.Logger, event: Event, group: str, adapter: str) -> None:
        self._logger = logger
        self._event = event
        self._group = group
        self._adapter = adapter
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event = self._event
        if exc is None:
            if self._logger.isEnabledFor(logging.DEBUG):
                self._logger.debug(
                    "%s: handled %s from %s (group %s, delivery %d) in %.3fms",
                    self._adapter,
                    event.id,
                    event.topic,
                    self._group,
                    event.delivery_count,
                    (time.perf_counter() - self._start) * 1000,
                )
        elif isinstance(exc, Exception) and self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(  # retried() or dead_lettered() says it louder, with what follows
                "%s: handler failed on %s from %s (group %s, delivery %d): %r",
                self._adapter,
                event.id,
                event.topic,
                self._group,
                event.delivery_count,
                exc,
            )
