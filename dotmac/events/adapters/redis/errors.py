"""The one place where redis-py errors become dotmac.events errors, with secrets scrubbed."""

from __future__ import annotations

from redis import exceptions as redis_errors

from dotmac.events.errors import EventBusError, PublishError, TransportError

__all__ = ["is_connection_error", "is_no_group", "scrub", "translate"]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes AuthenticationError, BusyLoadingError
    redis_errors.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)
"""Errors that mean the server could not be reached or did not answer: retry after a backoff."""


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the connection failed (not that Redis refused the command)."""
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(
        exc, redis_errors.AuthenticationError
    )


def is_no_group(exc: BaseException) -> bool:
    """True when Redis answered NOGROUP: the stream or its group is gone (deleted, or a restart
    without persistence)."""
    # A pipeline wraps the reply: "Command # 2 (XREADGROUP ...) of pipeline caused error: NOGROUP"
    return isinstance(exc, redis_errors.ResponseError) and "NOGROUP" in str(exc)


def translate(
    exc: BaseException, *, doing: str, secrets: tuple[str, ...], publish: bool = False
) -> EventBusError:
    """Our error for a redis-py (or socket) error raised while ``doing`` something.

    Returns ``exc`` itself when it already is one of ours. Raise the result ``from exc``.
    """
    if isinstance(exc, EventBusError):
        return exc
    kind = "connection lost" if is_connection_error(exc) else type(exc).__name__
    message = scrub(f"redis {doing} failed ({kind}): {exc}", secrets)
    return PublishError(message) if publish else TransportError(message)
