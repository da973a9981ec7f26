"""Handler failures in the log when no observer watches: visible by default, never a flood.

Each failed handler call is a WARNING (topic, group, attempt, what follows, the error) and each
dead letter an ERROR, on the ``dotmac.events`` logger. Of each kind, at most ``burst`` lines per
subscription go out in any ``window`` seconds (so retries never crowd out dead letters); past
that, lines are counted and the next line of that kind says how many were left out, so a poison
stream cannot fill the disk.
"""

from __future__ import annotations

import logging
import time

__all__ = ["FailureLog"]

logger = logging.getLogger("dotmac.events")


class _Budget:
    """At most ``burst`` lines in any ``window`` seconds, counting what it refused."""

    __slots__ = ("_burst", "_sent", "_window", "_window_start", "suppressed")

    def __init__(self, burst: int, window: float) -> None:
        self._burst = burst
        self._window = window
        self._window_start = -window
        self._sent = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window_start >= self._window:
            self._window_start = now
            self._sent = 0
        if self._sent >= self._burst:
            self.suppressed += 1
            return False
        self._sent += 1
        return True

    def left_out(self) -> str:
        left_out, self.suppressed = self.suppressed, 0
        return f" ({left_out} similar lines left out)" if left_out else ""


MAX_ERROR_CHARS = 500
"""Longest error text a failure line carries: a handler's exception message may be huge."""


def _shown(error: BaseException) -> str:
    text = repr(error)
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[:MAX_ERROR_CHARS]}... ({len(text)} chars)"


class FailureLog:
    """Rate-limited failure lines for one subscription."""

    def __init__(self, topic: str, group: str, *, burst: int = 10, window: float = 10.0) -> None:
        self.topic = topic
        self.group = group
        self._retries = _Budget(burst, window)
        self._dead = _Budget(burst, window)

    def retrying(self, attempt: int, delay: float, error: BaseException) -> None:
        if self._retries.allow():
            logger.warning(
                "handler failed on topic %s, group %s, attempt %d; retrying in %.3gs: %s%s",
                self.topic,
                self.group,
                attempt,
                delay,
                _shown(error),
                self._retries.left_out(),
            )

    def dead_lettered(self, attempts: int, dlq_topic: str, error: BaseException) -> None:
        if self._dead.allow():
            logger.error(
                "dead-lettered a message of topic %s, group %s, to %s after %d attempt(s): %s%s",
                self.topic,
                self.group,
                dlq_topic,
                attempts,
                _shown(error),
                self._dead.left_out(),
            )
