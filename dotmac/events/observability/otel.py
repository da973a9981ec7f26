"""OpenTelemetry tracing for every bus: the only module that imports ``opentelemetry`` (API only).

Each publish gets a PRODUCER span ``send <topic>``; its W3C trace context is written into the
event's headers (``traceparent``, ``tracestate``), so it travels through any transport. Each
handler call gets a CONSUMER span ``process <topic>`` whose parent is that producer span, so a
trace shows publish -> handling across processes. The span is current while the handler runs:
spans the handler makes, and events it publishes, join the same trace.

Attributes follow the OpenTelemetry messaging semantic conventions: ``messaging.system`` (the
adapter: memory, redis, kafka), ``messaging.destination.name``, ``messaging.operation.type``
(send / process), ``messaging.operation.name``, ``messaging.message.id`` (the event id, the same
on both sides), ``messaging.message.conversation_id``, ``messaging.consumer.group.name`` and,
where the transport has them, ``messaging.destination.partition.id``, ``messaging.kafka.offset``
and ``messaging.kafka.message.key``. A failed handler call sets ERROR status and records the
exception; it then ends with a ``retry`` event (attempt, delay) or a ``dead_letter`` event
(dlq topic, attempts).

Without an SDK (no ``tracer_provider`` given and no global provider set: the API alone), spans
would be non-recording, made and dropped on every message for nothing. Then only context is
carried: a handler call whose event holds trace headers (the propagator's ``fields``) runs in
the context extracted from them, and a publish made while a context is current gets it
injected, so a downstream service with an SDK still sees the upstream trace. Calls with
nothing to carry cost a check. Once an SDK provider is set, spans are made as above.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import (
        NoOpTracer,
        ProxyTracer,
        Span,
        SpanKind,
        Status,
        StatusCode,
        TracerProvider,
    )
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        'opentelemetry-api is not installed; tracing needs it: pip install "dotmac-events[otel]"'
    ) from exc

from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event
from dotmac.events.observability.observer import NOTHING_TO_CONSUME, NOTHING_TO_PUBLISH, _Nothing

__all__ = ["TracingObserver"]

_SCOPE = "dotmac.events"
_MAX_OPEN_FAILURES = 10_000
# The API keeps the global provider here (None until one is set); a ProxyTracer follows it.
# Read on every call so an SDK installed later takes effect; if a future API moves it, never
# assume "no SDK".
_GLOBAL_PROVIDER_SLOT = "_TRACER_PROVIDER"
_CAN_SEE_GLOBAL_PROVIDER = hasattr(trace, _GLOBAL_PROVIDER_SLOT)


def _error_type(error: BaseException) -> str:
    cls = type(error)
    name = cls.__qualname__
    return name if cls.__module__ == "builtins" else f"{cls.__module__}.{name}"


def _set_failed(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_attribute("error.type", _error_type(error))
    span.set_status(Status(StatusCode.ERROR, _error_type(error)))


def _attributes(event: Event, adapter: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": adapter,
        "messaging.destination.name": event.topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": str(event.id),
    }


def _add_message_attributes(attributes: dict[str, Any], event: Event, adapter: str) -> None:
    if event.key is not None and adapter == "kafka":
        attributes["messaging.kafka.message.key"] = event.key
    if event.metadata is not None and event.metadata.correlation_id is not None:
        attributes["messaging.message.conversation_id"] = event.metadata.correlation_id


class TracingObserver:
    """An Observer making producer and consumer spans.

    Args:
        tracer_provider: where spans go; the global provider when None (a no-op until the
            application installs an SDK).
        propagator: how context is written to and read from headers; the global propagator
            (W3C trace context and baggage by default) when None.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
            raise ConfigurationError(
                "tracer_provider",
                f"must be an opentelemetry TracerProvider, got {tracer_provider!r}",
            )
        from dotmac.events.version import __version__

        self.tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self._propagator = propagator
        # No SDK: a NoOpTracer always, a ProxyTracer while no global provider is set.
        self._noop = isinstance(self.tracer, NoOpTracer)
        self._proxied = isinstance(self.tracer, ProxyTracer) and _CAN_SEE_GLOBAL_PROVIDER
        self._fields_of: TextMapPropagator | None = None
        self._fields: frozenset[str] = frozenset()
        # Spans of failed handler calls, kept open until retried()/dead_lettered() says what
        # happened next. Bounded: past the limit the oldest are ended as they are.
        self._failed: OrderedDict[tuple[object, str], Span] = OrderedDict()

    def _textmap(self) -> TextMapPropagator:
        return self._propagator or get_global_textmap()

    def _inert(self) -> bool:
        """No SDK: spans would be non-recording."""
        return self._noop or (self._proxied and getattr(trace, _GLOBAL_PROVIDER_SLOT) is None)

    def _carries_context(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` hold a field the propagator reads (trace context, baggage)."""
        textmap = self._textmap()
        if textmap is not self._fields_of:  # a composite builds its field set on every read
            self._fields = frozenset(textmap.fields)
            self._fields_of = textmap
        return not self._fields.isdisjoint(headers)

    def publishing(
        self, event: Event, *, adapter: str
    ) -> _ProducerSpan | contextlib.AbstractContextManager[Mapping[str, str]]:
        if self._noop or (self._proxied and getattr(trace, _GLOBAL_PROVIDER_SLOT) is None):
            if not otel_context.get_current():  # no span, no baggage: nothing to inject
                return NOTHING_TO_PUBLISH
            headers: dict[str, str] = {}
            self._textmap().inject(headers)
            return _Nothing(headers)
        return _ProducerSpan(self, event, adapter)

    def consuming(
        self, event: Event, *, group: str, adapter: str
    ) -> _ConsumerSpan | _ContextOnly | _Nothing[None]:
        if self._noop or (self._proxied and getattr(trace, _GLOBAL_PROVIDER_SLOT) is None):
            headers = event.headers  # (self._inert(), inlined: this runs on every message)
            if not headers or not self._carries_context(headers):
                return NOTHING_TO_CONSUME
            return _ContextOnly(self, headers)
        return _ConsumerSpan(self, event, group, adapter)

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
        span = self._failed.pop((event.id, group), None) if self._failed else None
        if span is not None:
            span.add_event(
                "retry",
                {"messaging.retry.attempt": attempt, "messaging.retry.delay_seconds": delay},
            )
            span.end()

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
        attributes: dict[str, str | int] = {
            "messaging.dlq.destination.name": dlq_topic,
            "messaging.dlq.attempts": attempts,
        }
        span = (
            self._failed.pop((event.id, group), None)
            if event is not None and self._failed
            else None
        )
        if span is None:  # undecodable: no producer context to continue, record it on its own
            if self._inert():
                return
            span = self.tracer.start_span(
                f"process {topic}",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": adapter,
                    "messaging.destination.name": topic,
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.consumer.group.name": group,
                    "error.type": _error_type(error),
                },
            )
            _set_failed(span, error)
        span.add_event("dead_letter", attributes)
        span.end()

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        current = trace.get_current_span()
        if current.is_recording():
            current.add_event("error", {"dotmac.where": where, "error.type": _error_type(error)})

    def _keep_failed(self, key: tuple[object, str], span: Span) -> None:
        self._close_stale(key)
        self._failed[key] = span
        while len(self._failed) > _MAX_OPEN_FAILURES:
            _, oldest = self._failed.popitem(last=False)
            oldest.end()

    def _close_stale(self, key: tuple[object, str]) -> None:
        # A failed call whose dead-letter publish failed comes back without retried() or
        # dead_lettered() having ended its span: end it now.
        stale = self._failed.pop(key, None)
        if stale is not None:
            stale.end()


class _ProducerSpan:
    __slots__ = ("_adapter", "_event", "_observer", "_span", "_token")

    def __init__(self, observer: TracingObserver, event: Event, adapter: str) -> None:
        self._observer = observer
        self._event = event
        self._adapter = adapter
        self._span: Span | None = None
        self._token: object = None

    def __enter__(self) -> Mapping[str, str]:
        event = self._event
        attributes = _attributes(event, self._adapter, "send")
        _add_message_attributes(attributes, event, self._adapter)
        span = self._span = self._observer.tracer.start_span(
            f"send {event.topic}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        ctx = trace.set_span_in_context(span)
        self._token = otel_context.attach(ctx)
        headers: dict[str, str] = {}
        self._observer._textmap().inject(headers, context=ctx)
        return headers

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        assert span is not None
        if exc is not None:
            _set_failed(span, exc)
        span.end()


class _ConsumerSpan:
    __slots__ = ("_adapter", "_event", "_group", "_observer", "_span", "_token")

    def __init__(self, observer: TracingObserver, event: Event, group: str, adapter: str) -> None:
        self._observer = observer
        self._event = event
        self._group = group
        self._adapter = adapter
        self._span: Span | None = None
        self._token: object = None

    def __enter__(self) -> None:
        event = self._event
        observer = self._observer
        if observer._failed:  # (event.id is parsed only if a failed span may be waiting)
            observer._close_stale((event.id, self._group))
        parent = observer._textmap().extract(event.headers)
        attributes = _attributes(event, self._adapter, "process")
        attributes["messaging.consumer.group.name"] = self._group
        delivery = event.delivery
        if delivery is not None:
            attributes["dotmac.delivery.count"] = delivery.count
            if delivery.partition is not None:
                attributes["messaging.destination.partition.id"] = str(delivery.partition)
            if delivery.offset is not None and self._adapter == "kafka":
                attributes["messaging.kafka.offset"] = delivery.offset
        _add_message_attributes(attributes, event, self._adapter)
        span = self._span = observer.tracer.start_span(
            f"process {event.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        self._token = otel_context.attach(trace.set_span_in_context(span, parent))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        assert span is not None
        if exc is None:
            span.end()
        elif not isinstance(exc, Exception):  # cut short by close: the message goes back unacked
            span.add_event("cancelled")
            span.end()
        else:
            _set_failed(span, exc)
            self._observer._keep_failed((self._event.id, self._group), span)


class _ContextOnly:
    """No SDK, trace headers on the event: the handler runs in the context they carry (what a
    non-recording consumer span would give it), without making the span."""

    __slots__ = ("_headers", "_observer", "_token")

    def __init__(self, observer: TracingObserver, headers: Mapping[str, str]) -> None:
        self._observer = observer
        self._headers = headers
        self._token: object = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._observer._textmap().extract(self._headers))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]
