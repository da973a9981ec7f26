"""The one place aiokafka's errors become ours.

Every call into aiokafka runs inside :func:`kafka_errors`, so callers never see
``aiokafka.errors`` (or the bare OSError/TimeoutError aiokafka lets through).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiokafka import errors as kafka

from dotmac.events.errors import EventBusError, PublishError, TransportError

__all__ = ["is_retriable", "kafka_errors", "translate"]


def is_retriable(exc: BaseException) -> bool:
    """True where sending the same thing again later can succeed."""
    if isinstance(exc, kafka.KafkaError):
        return bool(exc.retriable) or isinstance(
            exc, kafka.KafkaTimeoutError | kafka.KafkaConnectionError | kafka.RequestTimedOutError
        )
    return isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError)


def translate(exc: BaseException, doing: str, *, publishing: bool = False) -> EventBusError:
    """Our error for a failure of ``doing``; PublishError when an event was being published."""
    if isinstance(exc, EventBusError):
        return exc
    kind = "retriable" if is_retriable(exc) else "not retriable"
    message = f"kafka: {doing} failed ({kind}): {type(exc).__name__}: {exc}"
    return PublishError(message) if publishing else TransportError(message)


@contextlib.contextmanager
def kafka_errors(doing: str, *, publishing: bool = False) -> Iterator[None]:
    """Run a block of aiokafka calls, raising our errors ``from`` theirs."""
    try:
        yield
    except EventBusError:
        raise
    except Exception as exc:  # CancelledError is a BaseException and passes through
        raise translate(exc, doing, publishing=publishing) from exc
