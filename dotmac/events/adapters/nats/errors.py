"""The one place where nats-py errors become dotmac.events errors, with secrets scrubbed.

Every call into nats-py that can fail runs inside :func:`nats_errors` (or its result goes
through :func:`translate`), so callers never see ``nats.errors`` or ``nats.js.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from nats import errors as nats_errors_module
from nats.js import errors as js_errors

from dotmac.events.engine.health import scrub
from dotmac.events.errors import EventBusError, PublishError, TransportError

__all__ = ["is_connection_error", "is_not_found", "nats_errors", "translate"]

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    nats_errors_module.ConnectionClosedError,
    nats_errors_module.ConnectionReconnectingError,
    nats_errors_module.NoServersError,
    nats_errors_module.StaleConnectionError,
    nats_errors_module.TimeoutError,
    nats_errors_module.NoRespondersError,
    js_errors.ServiceUnavailableError,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    OSError,
)
"""Errors that mean the server could not be reached or did not answer: retry after a while."""


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the server was unreachable or slow, not that it refused."""
    return isinstance(exc, _CONNECTION_ERRORS)


def is_not_found(exc: BaseException) -> bool:
    """True when JetStream answered that the stream or consumer does not exist."""
    return isinstance(exc, js_errors.NotFoundError) or (
        isinstance(exc, js_errors.APIError) and exc.code == 404
    )


def translate(
    exc: BaseException, *, doing: str, secrets: tuple[str, ...], publish: bool = False
) -> EventBusError:
    """Our error for a nats-py (or socket) error raised while ``doing`` something.

    Returns ``exc`` itself when it already is one of ours. Raise the result ``from exc``.
    """
    if isinstance(exc, EventBusError):
        return exc
    kind = "connection lost" if is_connection_error(exc) else type(exc).__name__
    message = scrub(f"nats {doing} failed ({kind}): {exc}", secrets)
    return PublishError(message) if publish else TransportError(message)


@contextlib.contextmanager
def nats_errors(doing: str, secrets: tuple[str, ...], *, publish: bool = False) -> Iterator[None]:
    """Run a block of nats-py calls, raising our errors ``from`` theirs."""
    try:
        yield
    except EventBusError:
        raise
    except Exception as exc:  # CancelledError is a BaseException and passes through
        raise translate(exc, doing=doing, secrets=secrets, publish=publish) from exc
