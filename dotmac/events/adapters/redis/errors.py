"""The one place where redis-py errors become dotmac.events errors, with secrets scrubbed.

Each error says whether retrying can help (``retryable``): yes for a refused or lost
connection, a timeout or a busy server; no for refused credentials (AuthenticationError), a
host name that does not resolve, a TLS certificate that is not trusted, or a command Redis
rejects as wrong (``WRONGTYPE``...), which fails the same way every time.
"""

from __future__ import annotations

import socket
import ssl

from redis import exceptions as redis_errors

from dotmac.events.engine.health import scrub
from dotmac.events.errors import AuthenticationError, EventBusError, PublishError, TransportError

__all__ = ["is_connection_error", "is_no_group", "is_retryable", "translate"]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes AuthenticationError, BusyLoadingError
    redis_errors.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)
"""Errors that mean the server could not be reached or did not answer: retry after a backoff."""

_BUSY = (
    redis_errors.BusyLoadingError,  # LOADING: the dataset is being loaded after a restart
    redis_errors.OutOfMemoryError,  # OOM: maxmemory reached until consumers trim or keys expire
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # includes MASTERDOWN
)
_BUSY_REPLIES = ("BUSY ", "READONLY ")  # a script running too long; a replica being promoted
_NO_CREDENTIALS = ("NOAUTH", "HELLO must be called", "Authentication required")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or while handling (redis-py wraps socket errors)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _auth_error(exc: BaseException) -> BaseException | None:
    """The refused-credentials error in ``exc``'s chain, if there is one."""
    auth = (
        redis_errors.AuthenticationError
        | redis_errors.AuthorizationError
        | redis_errors.NoPermissionError
        | redis_errors.AuthenticationWrongNumberOfArgsError
    )
    return next((e for e in _chain(exc) if isinstance(e, auth)), None)


def _unresolved_host(exc: BaseException) -> bool:
    return any(isinstance(e, socket.gaierror) for e in _chain(exc))


def _untrusted_tls(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc))


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the connection failed (not that Redis refused the command)."""
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(
        exc, redis_errors.AuthenticationError
    )


def is_retryable(exc: BaseException) -> bool:
    """True where doing the same again later can succeed (see the module docstring)."""
    if _auth_error(exc) is not None or _unresolved_host(exc) or _untrusted_tls(exc):
        return False
    if isinstance(exc, _BUSY) or is_connection_error(exc):
        return True
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(_BUSY_REPLIES)


def is_no_group(exc: BaseException) -> bool:
    """True when Redis answered NOGROUP: the stream or its group is gone (deleted, or a restart
    without persistence)."""
    # A pipeline wraps the reply: "Command # 2 (XREADGROUP ...) of pipeline caused error: NOGROUP"
    return isinstance(exc, redis_errors.ResponseError) and "NOGROUP" in str(exc)


def _auth_reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, redis_errors.NoPermissionError):
        return f"the user may not run this command or use this key ({text})"
    if any(marker in text for marker in _NO_CREDENTIALS):
        return "the server requires credentials and none were given (set username/password)"
    return "wrong username or password, or the user is disabled"


def translate(
    exc: BaseException, *, doing: str, secrets: tuple[str, ...], publish: bool = False
) -> EventBusError:
    """Our error for a redis-py (or socket) error raised while ``doing`` something.

    AuthenticationError for refused credentials (from publish too: nothing was sent);
    otherwise PublishError when publishing, else TransportError, with ``retryable`` set from
    the cause. Returns ``exc`` itself when it already is one of ours. Raise it ``from exc``.
    """
    if isinstance(exc, EventBusError):
        return exc
    auth = _auth_error(exc)
    if auth is not None:
        return AuthenticationError(
            scrub(f"redis {doing} failed: authentication refused: {_auth_reason(auth)}", secrets)
        )
    if _unresolved_host(exc):
        kind = "host name does not resolve"
    elif _untrusted_tls(exc):
        kind = "TLS certificate not trusted"
    elif any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)):
        kind = "connection refused"
    elif any(isinstance(e, redis_errors.TimeoutError | TimeoutError) for e in _chain(exc)):
        kind = "timed out"
    elif is_connection_error(exc):
        kind = "connection lost"
    else:
        kind = type(exc).__name__
    message = scrub(f"redis {doing} failed ({kind}): {exc}", secrets)
    error_class = PublishError if publish else TransportError
    return error_class(message, retryable=is_retryable(exc))
