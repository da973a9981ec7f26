"""LoggingObserver: one log line per thing worth a human's attention.

Successful publishes and handler calls log at DEBUG (a single ``isEnabledFor`` check when DEBUG
is off). A failed handler call logs once, saying what follows: a retry at WARNING, a dead letter
at ERROR. A failed publish logs at WARNING.
Payloads, keys and headers are never logged: they may hold personal data or secrets. Errors
outside handlers are already logged by the consumer engine, so they only go out at DEBUG here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dotmac.events.event import Event
from dotmac.events.observability.observer import NOTHING_TO_CONSUME, _Nothing
from dotmac.events.observability.timing import Timed

__all__ = ["LoggingObserver"]

_NO_HEADERS: Mapping[str, str] = {}


class LoggingObserver:
    """An Observer writing to ``logger`` (default ``dotmac.events.hooks``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("dotmac.events.hooks")

    def publishing(self, event: Event, *, adapter: str) -> Timed[Mapping[str, str], Event, str]:
        return Timed(self._published, _NO_HEADERS, event, adapter)

    def consuming(
        self, event: Event, *, group: str, adapter: str
    ) -> Timed[None, Event, str, str] | _Nothing[None]:
        # Handler calls log at DEBUG only (failures are told by retried() / dead_lettered()):
        # with DEBUG off there is nothing to time.
        if not self.logger.isEnabledFor(logging.DEBUG):
            return NOTHING_TO_CONSUME
        return Timed(self._consumed, None, event, group, adapter)

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

    def _published(
        self, elapsed: float, exc: BaseException | None, event: Event, adapter: str
    ) -> None:
        if exc is None:
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug(
                    "%s: published %s to %s in %.3fms",
                    adapter,
                    event.id,
                    event.topic,
                    elapsed * 1000,
                )
        elif isinstance(exc, Exception):
            self.logger.warning(
                "%s: publish of %s to %s failed: %r", adapter, event.id, event.topic, exc
            )

    def _consumed(
        self, elapsed: float, exc: BaseException | None, event: Event, group: str, adapter: str
    ) -> None:
        if exc is None:
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug(
                    "%s: handled %s from %s (group %s, delivery %d) in %.3fms",
                    adapter,
                    event.id,
                    event.topic,
                    group,
                    event.delivery_count,
                    elapsed * 1000,
                )
        elif isinstance(exc, Exception) and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(  # retried() or dead_lettered() says it louder, with what follows
                "%s: handler failed on %s from %s (group %s, delivery %d): %r",
                adapter,
                event.id,
                event.topic,
                group,
                event.delivery_count,
                exc,
            )
