"""The one error tree of dotmac-events.

Callers never need to catch ``redis.exceptions`` or ``aiokafka.errors``: adapters translate
native errors in one place and raise one of these ``from`` the original.

::

    EventBusError
    ├── ConfigurationError (ValueError)   invalid config, raised at construction   not retryable
    ├── InvalidEventError (ValueError)    an Event built with bad fields           not retryable
    ├── PublishError                      the transport did not accept an event    retryable
    ├── TransportError                    the broker failed or is unreachable      retryable
    │   └── AuthenticationError           credentials refused (or none given)      not retryable
    ├── BusClosedError (RuntimeError)     the bus or subscription is closed        not retryable
    ├── UnsupportedOperation              the transport cannot do this             not retryable
    ├── CodecError                                                                not retryable
    │   ├── EncodeError (ValueError)      payload not JSON or failed its schema
    │   │   └── ValidationError           payload does not match its topic's model
    │   └── DecodeError (ValueError)      bytes are not an event we can read
    ├── HandlerTimeout (TimeoutError)     a handler ran past its time limit        retryable
    ├── RequestTimeout (TimeoutError)     no reply to request() in time            retryable
    ├── RetriesExhausted                  attempts used up by earlier deliveries   not retryable
    ├── BatchFailed                       raised by a batch handler: some failed   retryable
    └── Reject                            raised by a handler: dead-letter now     not retryable

``retryable`` says whether trying the same thing again later can succeed. The class sets the
default; an adapter sets it per error where the cause decides. So a PublishError or
TransportError is retryable for a refused connection, a timeout or a busy broker (Redis
``BUSY``/``LOADING``/``OOM``, a retriable Kafka error), and not for a Redis host name that does
not resolve, a TLS certificate that is not trusted, or a command the broker rejects as wrong.
AuthenticationError is raised by any call, ``publish`` included (nothing was sent): wrong or
missing credentials, or a user the broker does not permit; its text never holds the password.

PublishError also says whether the broker may hold the event (``may_have_been_written``):
False when it certainly does not (publish again freely), True when the request may have
reached it and the answer was lost (publishing again may duplicate; consumers dedupe on
``event.id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AuthenticationError",
    "BatchFailed",
    "BusClosedError",
    "CodecError",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "EventBusError",
    "HandlerTimeout",
    "InvalidEventError",
    "PublishError",
    "Reject",
    "RequestTimeout",
    "RetriesExhausted",
    "TransportError",
    "UnsupportedOperation",
    "ValidationError",
]


class EventBusError(Exception):
    """Root of every error this library raises.

    ``retryable`` defaults to the class's value; ``retryable=`` overrides it for one error.
    """

    retryable: bool = False

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable


class ConfigurationError(EventBusError, ValueError):
    """A config value is invalid; the message names the field and why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class InvalidEventError(EventBusError, ValueError):
    """An ``Event`` was constructed with a field of the wrong type or value."""


class PublishError(EventBusError):
    """The transport did not confirm that it accepted the event.

    ``may_have_been_written`` says what a caller may do next. False: no event of the call
    reached the broker (the connection could not be opened, the broker refused it): publish
    again, nothing is duplicated. True (the default, when an adapter cannot tell): the broker
    may hold some of them (the request was sent and no answer came): publishing again may
    write them twice, so consumers must dedupe on ``event.id``, which a republished event keeps.
    """

    retryable = True

    def __init__(self, *args: object, may_have_been_written: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.may_have_been_written = may_have_been_written


class TransportError(EventBusError):
    """The broker failed, timed out or could not be reached."""

    retryable = True


class AuthenticationError(TransportError):
    """The broker refused our credentials, none were given where it needs them, or the user
    may not run what we asked (Redis ``NOPERM``, Kafka authorization). Not retryable: the same
    credentials fail again. The message never holds the password."""

    retryable = False


class BusClosedError(EventBusError, RuntimeError):
    """The bus (or subscription) was closed; nothing more can go through it."""


class UnsupportedOperation(EventBusError):
    """This transport cannot perform the operation (see its capabilities)."""


class CodecError(EventBusError):
    """Turning an event into bytes or back failed."""


class EncodeError(CodecError, ValueError):
    """The event cannot be encoded: a payload value is not JSON, or the schema rejected it."""


class ValidationError(EncodeError):
    """A payload does not match the schema registered for its topic (``register_schema``).

    ``field`` is the path of the first bad field (``"items[0].qty"``), ``reason`` what is wrong
    with it and ``schema`` the model's name. Not retryable: the same payload fails again.
    """

    def __init__(self, field: str, reason: str, schema: str) -> None:
        self.field = field
        self.reason = reason
        self.schema = schema
        super().__init__(f"payload does not match {schema}: {field}: {reason}")


class DecodeError(CodecError, ValueError):
    """The bytes are not an event this codec can read; the message says what was wrong."""


class HandlerTimeout(EventBusError, TimeoutError):
    """A handler did not finish within ``ConsumerOptions.handler_timeout``."""

    retryable = True


class RequestTimeout(EventBusError, TimeoutError):
    """``request()`` got no reply within its timeout."""

    retryable = True


class RetriesExhausted(EventBusError):
    """The error of a dead letter whose attempts were all made by deliveries before a crash."""


class BatchFailed(EventBusError):
    """Raise from a batch handler when only some events failed: ``events`` (the Event objects
    the handler received) are retried or dead-lettered with ``error``; the rest are acked."""

    retryable = True

    def __init__(self, events: Sequence[Any], error: BaseException | str) -> None:
        self.events = tuple(events)
        self.error = error if isinstance(error, BaseException) else RuntimeError(error)
        super().__init__(f"{len(self.events)} event(s) of the batch failed: {self.error!r}")


class Reject(EventBusError):
    """Raise from a handler to send the event to the dead-letter topic without retrying."""
