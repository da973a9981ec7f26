"""Ready-made observer bundles: pass one as ``observer=`` to any bus factory.

``create_default_hooks()`` needs no extra: logging plus an in-process MetricsCollector.
``create_dotmac_observability_hooks()`` adds Prometheus metrics (extra ``prometheus``) and, when
``opentelemetry-api`` is installed, tracing (extra ``otel``). Both extras are imported only here,
when called, so ``import dotmac.events`` stays free of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dotmac.events.event import Event
from dotmac.events.observability.collector import MetricsCollector, _roll, _Topic
from dotmac.events.observability.logs import LoggingObserver
from dotmac.events.observability.observer import CompositeObserver, Observer

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from dotmac.events.observability.otel import TracingObserver
    from dotmac.events.observability.prometheus import PrometheusObserver

__all__ = ["ObservabilityHooks", "create_default_hooks", "create_dotmac_observability_hooks"]


_NO_HEADERS: Mapping[str, str] = {}
_NO_LOG = {logging.DEBUG: False}
_CACHE_LIMIT = 4096
"""Routes remembered per direction; private groups and inboxes have random names, so past this
the cache starts over."""


class _Route:
    """Where the calls of one label set go: the collector's topic, the Prometheus series (None
    without Prometheus) and what the log line names. Found once and cached."""

    __slots__ = (
        "adapter",
        "consuming",
        "group",
        "idle",
        "latency",
        "levels",
        "log",
        "name",
        "series",
        "topic",
    )

    def __init__(
        self,
        topic: _Topic,
        series: Any,
        log: LoggingObserver | None,
        group: str,
        adapter: str,
    ) -> None:
        self.topic = topic
        # The collector's recent handler durations (unused by publishing routes).
        self.latency = topic.consume.recent.append
        self.series = series
        self.log = log
        # The logger's own cache of isEnabledFor() answers (CPython's Logger._cache: filled by
        # isEnabledFor, emptied in place when levels change): DEBUG is off when it says False.
        # An empty dict where there is none (isEnabledFor is asked each time); without a
        # LoggingObserver, one that always says off.
        levels: dict[int, bool] | None = None if log is None else getattr(log.logger, "_cache", {})
        self.levels = _NO_LOG if levels is None else levels
        self.group = group
        self.adapter = adapter
        self.idle: Any = None  # a finished call, reused by the next call on this route
        self.name = ""  # the topic's name, for consuming()'s check of its last route


class _FusedConsuming:
    """One handler call for logging, the collector and Prometheus at once: the clock is read as
    the call is handed out (right before the engine enters it) and on exit, and the elapsed time
    and outcome go to each part as its own context manager would have recorded them. Made
    without an ``__init__`` and reused once exited (a call in progress is never reused).

    Each part records through its own code (the Prometheus series, the collector's topic), so
    this class holds no copy of their bookkeeping."""

    __slots__ = ("event", "route", "start")
    event: Event
    route: _Route
    start: float  # read by consuming(), right before the engine enters the call

    def __enter__(self) -> None:
        return None  # the clock was read when the call was handed out

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        now = perf_counter()
        elapsed = now - self.start
        route = self.route
        if route.series is not None:
            route.series.record(elapsed, exc)
        if exc is None or isinstance(exc, Exception):
            topic = route.topic
            if now >= topic.until:
                _roll(topic, now)
            if exc is None:
                topic.consumed += 1
            else:
                topic.failed += 1
            topic.consume.total += elapsed
            route.latency(elapsed)
            if route.levels.get(logging.DEBUG) is not False:
                _log_consumed(route, elapsed, exc, self.event)
        route.idle = self


def _log_consumed(route: _Route, elapsed: float, exc: BaseException | None, event: Event) -> None:
    """The LoggingObserver's part, when its logger's cache does not say DEBUG is off."""
    log = route.log
    if log is not None and log.logger.isEnabledFor(logging.DEBUG):
        log._consumed(elapsed, exc, event, route.group, route.adapter)


class _FusedPublishing:
    """One publish for logging, the collector and Prometheus at once (see _FusedConsuming)."""

    __slots__ = ("event", "route", "start")
    event: Event
    route: _Route
    start: float  # read by publishing(), right before the engine enters the call

    def __enter__(self) -> Mapping[str, str]:
        return _NO_HEADERS  # the clock was read when the call was handed out

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = perf_counter() - self.start
        route = self.route
        if route.series is not None:
            route.series.record(elapsed, exc)
        topic = route.topic  # the collector's _published, inlined
        topic.publish.add(elapsed)
        if exc is None:
            topic.published += 1
        else:
            topic.publish_errors += 1
        log = route.log
        if log is not None and (exc is not None or log.logger.isEnabledFor(logging.DEBUG)):
            log._published(elapsed, exc, self.event, route.adapter)
        route.idle = self


class _Fused:
    """An Observer doing the publish and handler-call work of a LoggingObserver (or none), a
    MetricsCollector and a PrometheusObserver (or none) in one context manager per call.
    Retries, dead letters and errors are not its business: ObservabilityHooks sends those to
    the parts themselves."""

    def __init__(
        self,
        logging_observer: LoggingObserver | None,
        collector: MetricsCollector,
        prometheus: PrometheusObserver | None,
    ) -> None:
        self._log = logging_observer
        self._collector = collector
        self._prometheus = prometheus
        self._tenant = prometheus is not None and prometheus.tenant_label
        self._consume_routes: dict[tuple[Any, ...], _Route] = {}
        self._publish_routes: dict[tuple[Any, ...], _Route] = {}
        # The last consuming route, kept in a dict so that the collector's reset() empties it too.
        self._last: dict[str, _Route] = {}
        # The collector's reset() forgets its topics; the routes holding them go with them.
        collector._topic_caches += (self._consume_routes, self._publish_routes, self._last)

    def _route(
        self,
        routes: dict[tuple[Any, ...], _Route],
        key: tuple[Any, ...],
        topic: _Topic,
        series: Any,
        group: str,
        adapter: str,
    ) -> _Route:
        route = _Route(topic, series, self._log, group, adapter)
        if len(routes) >= _CACHE_LIMIT:
            routes.clear()
        routes[key] = route
        return route

    def publishing(self, event: Event, *, adapter: str) -> _FusedPublishing:
        if self._tenant:
            key: tuple[Any, ...] = (event.topic, adapter, event.tenant_id)
        else:
            key = (event.topic, adapter)
        route = self._publish_routes.get(key)
        if route is None:
            prometheus = self._prometheus
            series = None if prometheus is None else prometheus._publish_series(event, adapter)
            topic = self._collector._topic(event.topic)
            route = self._route(self._publish_routes, key, topic, series, "", adapter)
        call = route.idle
        if call is None:
            call = _FusedPublishing()
            call.route = route
        else:
            route.idle = None
        call.event = event
        call.start = perf_counter()
        return call  # type: ignore[no-any-return]

    def consuming(self, event: Event, *, group: str, adapter: str) -> _FusedConsuming:
        route = self._last.get("consume")  # a subscription's calls come in runs on one route
        if (
            route is None
            or route.name != event.topic
            or route.group != group
            or route.adapter != adapter
        ):
            route = self._consume_route(event, group, adapter)
        call = route.idle
        if call is None:
            call = _FusedConsuming()
            call.route = route
        else:
            route.idle = None
        call.event = event
        call.start = perf_counter()
        return call  # type: ignore[no-any-return]

    def _consume_route(self, event: Event, group: str, adapter: str) -> _Route:
        if self._tenant:
            key: tuple[Any, ...] = (event.topic, adapter, group, event.tenant_id)
        else:
            key = (event.topic, adapter, group)
        route = self._consume_routes.get(key)
        if route is None:
            prometheus = self._prometheus
            series = (
                None if prometheus is None else prometheus._consume_series(event, group, adapter)
            )
            topic = self._collector._topic(event.topic)
            route = self._route(self._consume_routes, key, topic, series, group, adapter)
        route.name = event.topic
        if not self._tenant:  # with a tenant label the route depends on the tenant too
            self._last["consume"] = route
        return route

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
        return None

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
        return None

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        return None


def _fusable(
    logging_observer: LoggingObserver | None,
    collector: MetricsCollector | None,
    prometheus: PrometheusObserver | None,
) -> bool:
    """The parts are the stock classes (a subclass may time or record differently)."""
    if collector is None or type(collector) is not MetricsCollector:
        return False
    if logging_observer is not None and type(logging_observer) is not LoggingObserver:
        return False
    if prometheus is not None:
        from dotmac.events.observability.prometheus import PrometheusObserver

        if type(prometheus) is not PrometheusObserver:
            return False
    return True


class ObservabilityHooks(CompositeObserver):
    """A CompositeObserver that keeps its parts at hand: ``hooks.collector.report()``.

    When the parts are the stock LoggingObserver, MetricsCollector and PrometheusObserver,
    publishes and handler calls do their three parts' work in one context manager (one clock
    reading on entry and one on exit); what each part records is the same.
    """

    def __init__(
        self,
        *,
        logging_observer: LoggingObserver | None,
        collector: MetricsCollector | None,
        prometheus: PrometheusObserver | None = None,
        tracing: TracingObserver | None = None,
        extra: Sequence[Observer] = (),
    ) -> None:
        # Tracing first, so the other observers run inside the current span.
        parts: list[Any] = [tracing, logging_observer, collector, prometheus, *extra]
        super().__init__([p for p in parts if p is not None])
        if collector is not None and _fusable(logging_observer, collector, prometheus):
            fused = _Fused(logging_observer, collector, prometheus)
            hot: Any = fused
            if tracing is not None or extra:
                hot = CompositeObserver([p for p in (tracing, fused, *extra) if p is not None])
            # Instance attributes shadow CompositeObserver's methods: the engine calls these
            # on every publish and handler call. retried() and friends still reach every part.
            self.publishing = hot.publishing  # type: ignore[method-assign]
            self.consuming = hot.consuming  # type: ignore[method-assign]
        self.logging = logging_observer
        self.collector = collector
        self.prometheus = prometheus
        self.tracing = tracing


def create_default_hooks(
    *, logger: logging.Logger | None = None, max_samples: int = 1000, window: float = 60.0
) -> ObservabilityHooks:
    """Logging plus an in-process :class:`MetricsCollector` (``hooks.collector.report()``)."""
    return ObservabilityHooks(
        logging_observer=LoggingObserver(logger),
        collector=MetricsCollector(max_samples=max_samples, window=window),
    )


def _otel_installed() -> bool:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def create_dotmac_observability_hooks(
    metrics_registry: CollectorRegistry | None = None,
    tenant_metrics: object = None,
    *,
    tracing: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    logger: logging.Logger | None = None,
) -> ObservabilityHooks:
    """Logging, the in-process collector, Prometheus metrics and (optionally) tracing.

    Args:
        metrics_registry: the ``prometheus_client.CollectorRegistry`` to register on; the
            default global registry when None.
        tenant_metrics: anything truthy adds a ``tenant_id`` label to every metric (one series
            per tenant: keep it off for many tenants).
        tracing: make OpenTelemetry spans. None (default): on when ``opentelemetry-api`` is
            installed, using ``tracer_provider`` or the global provider.
        tracer_provider: the provider spans go to (implies tracing).

    Raises:
        ImportError: ``prometheus_client`` (or, with ``tracing=True``, ``opentelemetry-api``)
            is not installed; the message names the pip extra.
        ConfigurationError: ``metrics_registry`` is not a CollectorRegistry.
    """
    from dotmac.events.observability.prometheus import PrometheusObserver

    prometheus = PrometheusObserver(metrics_registry, tenant_label=bool(tenant_metrics))
    if tracing is None:
        tracing = tracer_provider is not None or _otel_installed()
    tracer: TracingObserver | None = None
    if tracing:
        from dotmac.events.observability.otel import TracingObserver

        tracer = TracingObserver(tracer_provider)
    return ObservabilityHooks(
        logging_observer=LoggingObserver(logger),
        collector=MetricsCollector(),
        prometheus=prometheus,
        tracing=tracer,
    )
