"""The one place aiokafka's errors become ours.

Every call into aiokafka runs inside :func:`kafka_errors`, so callers never see
``aiokafka.errors`` (or the bare OSError/TimeoutError aiokafka lets through). Refused SASL
credentials (also when aiokafka's SCRAM client trips over the broker's refusal) and
authorization failures become AuthenticationError; every other error carries
``retryable`` from :func:`is_retriable`: a TLS certificate that is not trusted is not
retriable, whatever aiokafka's class says. aiokafka reports a bootstrap server it could not
reach the same way whether its name resolves or not, so that one stays retriable. A
PublishError says ``may_have_been_written=False`` only where the broker certainly holds
nothing (:func:`surely_unwritten`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Iterator
from typing import Any

from aiokafka import errors as kafka

from dotmac.events.errors import AuthenticationError, EventBusError, PublishError, TransportError

__all__ = [
    "is_auth_error",
    "is_retriable",
    "kafka_errors",
    "surely_unwritten",
    "translate",
    "unless_cancelled",
]

_AUTH_ERRORS = (
    kafka.AuthenticationFailedError,
    kafka.AuthenticationMethodNotSupported,
    kafka.SaslAuthenticationFailed,
    kafka.UnsupportedSaslMechanismError,
    kafka.IllegalSaslStateError,
    kafka.TopicAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.TransactionalIdAuthorizationFailed,
)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or while handling (aiokafka wraps socket errors)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _in_sasl_exchange(exc: BaseException) -> bool:
    """An error of aiokafka's own SASL client code, not of the network or the protocol.

    A broker that refuses a SCRAM login inside the exchange (RFC 5802: ``e=unknown-user`` in
    its final message, as Tansu does, instead of Kafka's SaslAuthenticate error code) makes
    aiokafka's authenticator fail to parse it, with a bare KeyError or ValueError raised in
    ``AIOKafkaConnection._do_sasl_handshake``: a refused login all the same."""
    if isinstance(exc, kafka.KafkaError | OSError | asyncio.TimeoutError):
        return False
    frame = exc.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        if code.co_name == "_do_sasl_handshake" and code.co_filename.endswith("conn.py"):
            return True
        frame = frame.tb_next
    return False


def is_auth_error(exc: BaseException) -> bool:
    """True when the broker refused our credentials or what they allow."""
    return any(isinstance(e, _AUTH_ERRORS) or _in_sasl_exchange(e) for e in _chain(exc))


def _is_misconfigured(exc: BaseException) -> bool:
    """A host name that does not resolve or a certificate not trusted: the same next time."""
    return any(isinstance(e, socket.gaierror | ssl.SSLCertVerificationError) for e in _chain(exc))


def is_retriable(exc: BaseException) -> bool:
    """True where sending the same thing again later can succeed."""
    if is_auth_error(exc) or _is_misconfigured(exc):
        return False
    if isinstance(exc, kafka.KafkaError):
        return bool(exc.retriable) or isinstance(
            exc, kafka.KafkaTimeoutError | kafka.KafkaConnectionError | kafka.RequestTimedOutError
        )
    return isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError)


def surely_unwritten(exc: BaseException) -> bool:
    """True when the broker certainly holds nothing of the publish: it answered with an error
    (a refusal, not a timeout, and not "written but under-replicated"), or no connection was
    ever made (the host does not resolve, the certificate is not trusted)."""
    for error in _chain(exc):
        if isinstance(error, kafka.BrokerResponseError) and not isinstance(
            error, kafka.RequestTimedOutError | kafka.NotEnoughReplicasAfterAppendError
        ):
            return True
    return _is_misconfigured(exc)


def translate(
    exc: BaseException,
    doing: str,
    *,
    publishing: bool = False,
    may_have_been_written: bool | None = None,
) -> EventBusError:
    """Our error for a failure of ``doing``; PublishError when an event was being published,
    saying ``may_have_been_written`` when the caller knows (else judged from ``exc``)."""
    if isinstance(exc, EventBusError):
        return exc
    if is_auth_error(exc):
        return AuthenticationError(
            f"kafka: {doing} failed: authentication or authorization refused: "
            f"{type(exc).__name__}: {exc}"
        )
    retryable = is_retriable(exc)
    kind = "retriable" if retryable else "not retriable"
    message = f"kafka: {doing} failed ({kind}): {type(exc).__name__}: {exc}"
    if publishing:
        return PublishError(
            message,
            retryable=retryable,
            may_have_been_written=(
                not surely_unwritten(exc)
                if may_have_been_written is None
                else may_have_been_written
            ),
        )
    return TransportError(message, retryable=retryable)


@contextlib.contextmanager
def kafka_errors(doing: str, *, publishing: bool = False) -> Iterator[None]:
    """Run a block of aiokafka calls, raising our errors ``from`` theirs."""
    try:
        yield
    except EventBusError:
        raise
    except Exception as exc:  # CancelledError is a BaseException and passes through
        raise translate(exc, doing, publishing=publishing) from exc


async def unless_cancelled(call: Awaitable[Any]) -> Any:
    """Await an aiokafka call that may raise CancelledError on its own: a connection cut while
    it waited cancels aiokafka's internal future. Unless this task is being cancelled, that is
    a failure of the call (RuntimeError), not a cancellation of the close that made it."""
    try:
        return await call
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise RuntimeError("aiokafka call cancelled by a lost connection") from None
