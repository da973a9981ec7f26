"""When a delayed event is due: ``publish(event, delay=60)`` or ``publish(event, at=when)``.

Due times are Unix timestamps (seconds, float): the form every broker can store (a Redis sorted
set's score, a Kafka header), and one that means the same in every process of the group.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from dotmac.events.errors import ConfigurationError

__all__ = ["due_time"]


def due_time(delay: float | timedelta | None, at: datetime | None, now: float) -> float | None:
    """The Unix time an event published at ``now`` is due, or None when it is not delayed.

    Raises:
        ConfigurationError: both are given, ``delay`` is negative or not a number, or ``at`` is
            a naive datetime (whose time zone no other process could know).
    """
    if delay is not None and at is not None:
        raise ConfigurationError("delay", "give delay or at, not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ConfigurationError("delay", f"must be seconds >= 0 or a timedelta, got {delay!r}")
        return now + seconds
    if at is not None:
        if not isinstance(at, datetime):
            raise ConfigurationError("at", f"must be a datetime, got {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ConfigurationError(
                "at", "must be timezone-aware (datetime.now(UTC) + ..., not datetime.now())"
            )
        return at.timestamp()
    return None
