"""The error tree: relations, builtin mixins and retryable flags, as drawn in errors.py."""

from __future__ import annotations

import pytest

from dotmac.events import errors
from dotmac.events.errors import (
    AuthenticationError,
    BatchFailed,
    BusClosedError,
    CodecError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    EventBusError,
    HandlerTimeout,
    InvalidEventError,
    PublishError,
    Reject,
    RequestTimeout,
    RetriesExhausted,
    TransportError,
    UnsupportedOperation,
    ValidationError,
)

# (class, direct library parent, builtin mixin or None, retryable)
TREE: list[tuple[type[EventBusError], type[Exception], type[Exception] | None, bool]] = [
    (ConfigurationError, EventBusError, ValueError, False),
    (InvalidEventError, EventBusError, ValueError, False),
    (PublishError, EventBusError, None, True),
    (TransportError, EventBusError, None, True),
    (AuthenticationError, TransportError, None, False),
    (BusClosedError, EventBusError, RuntimeError, False),
    (UnsupportedOperation, EventBusError, None, False),
    (CodecError, EventBusError, None, False),
    (EncodeError, CodecError, ValueError, False),
    (ValidationError, EncodeError, ValueError, False),
    (DecodeError, CodecError, ValueError, False),
    (HandlerTimeout, EventBusError, TimeoutError, True),
    (RequestTimeout, EventBusError, TimeoutError, True),
    (RetriesExhausted, EventBusError, None, False),
    (BatchFailed, EventBusError, None, True),
    (Reject, EventBusError, None, False),
]


def test_every_exported_error_is_in_the_tree() -> None:
    exported = {getattr(errors, name) for name in errors.__all__}
    assert exported == {cls for cls, *_ in TREE} | {EventBusError}
    assert issubclass(EventBusError, Exception)
    assert EventBusError.retryable is False


@pytest.mark.parametrize(("cls", "parent", "mixin", "retryable"), TREE)
def test_tree_relations_and_retryable_flag(
    cls: type[EventBusError],
    parent: type[Exception],
    mixin: type[Exception] | None,
    retryable: bool,
) -> None:
    assert issubclass(cls, EventBusError)
    assert issubclass(cls, parent)
    assert cls.__bases__[0] is parent
    if mixin is not None:
        assert issubclass(cls, mixin)
    for other in (ValueError, RuntimeError, TimeoutError):
        if other is not mixin:
            assert not issubclass(cls, other), f"{cls.__name__} should not be a {other.__name__}"
    assert cls.retryable is retryable


def test_retryable_is_documented_for_each_class() -> None:
    doc = errors.__doc__ or ""
    for cls, _parent, _mixin, retryable in TREE:
        line = next(ln for ln in doc.splitlines() if f" {cls.__name__} " in f" {ln} ")
        if cls.__bases__[0] is EventBusError and cls is not CodecError:
            assert ("not retryable" in line) is (not retryable), line


def test_timeouts_are_caught_by_builtin_handlers() -> None:
    with pytest.raises(TimeoutError):
        raise RequestTimeout("no reply")
    with pytest.raises(ValueError):
        raise DecodeError("garbage")
    with pytest.raises(RuntimeError):
        raise BusClosedError("closed")


def test_configuration_error_names_field_and_reason() -> None:
    error = ConfigurationError("max_queue_size", "must be an int >= 1, got 0")
    assert error.field == "max_queue_size"
    assert error.reason == "must be an int >= 1, got 0"
    assert str(error) == "max_queue_size: must be an int >= 1, got 0"
    assert isinstance(error, ValueError)


def test_errors_chain_their_cause() -> None:
    cause = OSError("connection refused")
    try:
        try:
            raise cause
        except OSError as exc:
            raise TransportError("broker unreachable") from exc
    except TransportError as err:
        assert err.__cause__ is cause


def test_batch_failed_names_its_events_and_keeps_the_cause() -> None:
    cause = ValueError("bad row")
    failed = BatchFailed(["a", "b"], cause)
    assert failed.events == ("a", "b") and failed.error is cause
    assert "2 event(s)" in str(failed)
    assert isinstance(BatchFailed([], "plain text").error, RuntimeError)
