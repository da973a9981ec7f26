"""Prometheus metrics for every bus: the only module that imports ``prometheus_client``.

:class:`PrometheusObserver` records, with exactly these names (labels in brackets)::

    events_published_total            counter    [topic, adapter, outcome]
    event_publish_duration_seconds    histogram  [topic, adapter]
    events_consumed_total             counter    [topic, adapter, group, outcome]
    event_consume_duration_seconds    histogram  [topic, adapter, group]
    events_retried_total              counter    [topic, adapter, group]
    events_dlq_total                  counter    [topic, adapter, group]
    events_errors_total               counter    [topic, adapter, where]

``outcome`` is ``success``, ``error`` or (a handler cut short by close) ``cancelled``. With
``tenant_label=True`` every metric above also carries ``tenant_id``; it is off by default because
each tenant multiplies the series. Private groups (``subscribe`` without ``group``) and
request-reply inboxes get random names; they are reported as ``group="private"`` and
``topic="_inbox"`` so they do not create a new series per process.

Publishes and handler calls are counted in plain per-label-set numbers (a dict lookup, a few
additions, no lock) and turned into the counter and histogram families when the registry is
scraped, so the names, labels, help texts and buckets read exactly as prometheus_client's own
Counter and Histogram would (``_created`` is when the label set was first seen). Under
prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) they go through its
Counter and Histogram instead, so every worker's values reach the shared files.

:class:`BacklogMonitor` exports what ``bus.stats()`` knows as gauges (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from time import perf_counter
from types import TracebackType
from typing import Any, Self

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client import metrics as _client_metrics
    from prometheus_client import values as _client_values
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
    from prometheus_client.samples import Sample
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "prometheus_client is not installed; Prometheus metrics need it: "
        'pip install "dotmac-events[prometheus]"'
    ) from exc

from dotmac.events.bus import BacklogStats, EventBus
from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event

__all__ = [
    "DEFAULT_BUCKETS",
    "METRIC_NAMES",
    "BacklogMonitor",
    "PrometheusObserver",
]

logger = logging.getLogger("dotmac.events.prometheus")

DEFAULT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Latency buckets in seconds: from sub-millisecond in-process handling to slow handlers."""

METRIC_NAMES = (
    "events_published_total",
    "event_publish_duration_seconds",
    "events_consumed_total",
    "event_consume_duration_seconds",
    "events_retried_total",
    "events_dlq_total",
    "events_errors_total",
    "events_topic_length",
    "events_consumer_lag",
    "events_pending",
    "events_oldest_pending_age_seconds",
    "events_dlq_depth",
)
"""Every metric family this module exports (histograms add _bucket, _sum and _count)."""

_NO_HEADERS: Mapping[str, str] = {}
_PRIVATE_GROUP_LENGTH = len("private-") + 32
_INBOX_PREFIX = "_inbox."
_CACHE_LIMIT = 4096
"""Raw (topic, group) names remembered per direction; private groups and inboxes have random
names, so past this the cache starts over (the series themselves are kept)."""

# (family name, help, label names before "outcome") per direction; "outcome" and then
# "tenant_id" (with tenant_label) follow.
_PUBLISH = "publish"
_CONSUME = "consume"
_FAMILIES = {
    _PUBLISH: (
        ("events_published_total", "Events published, by outcome."),
        ("event_publish_duration_seconds", "Time until the transport accepted a publish."),
        ("topic", "adapter"),
    ),
    _CONSUME: (
        ("events_consumed_total", "Handler calls, by outcome (each retry is a call)."),
        ("event_consume_duration_seconds", "Handler call duration."),
        ("topic", "adapter", "group"),
    ),
}
_OUTCOMES = ("success", "error", "cancelled")


def _topic_label(topic: str) -> str:
    return "_inbox" if topic.startswith(_INBOX_PREFIX) else topic


def _group_label(group: str) -> str:
    if len(group) == _PRIVATE_GROUP_LENGTH and group.startswith("private-"):
        return "private"
    return group


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "success"
    return "error" if isinstance(exc, Exception) else "cancelled"


def _bounds(buckets: tuple[float, ...]) -> tuple[float, ...]:
    """The finite upper bounds, checked as prometheus_client's Histogram checks them."""
    bounds = [float(b) for b in buckets]
    if bounds != sorted(bounds):
        raise ValueError("Buckets not in sorted order")
    if bounds and bounds[-1] == float("inf"):
        bounds.pop()
    if not bounds:
        raise ValueError("Must have at least two buckets")
    return tuple(bounds)


class _Series:
    """The calls (publishes or handler calls) of one label set, as plain numbers: recording one
    is a few integer and float additions, with no lock.

    Writers are the event loops of the buses sharing the registry; a scrape reads from the HTTP
    server's thread without stopping them. Both rely on the GIL: an ``+=`` on an int attribute or
    list item is not interrupted between its load and its store, so counts stay exact with
    buses on several threads, and a scrape may at most see a call in its outcome count and not
    yet in its duration, which the next scrape settles. (On a free-threaded build without the
    GIL, give each thread's bus its own registry.)
    """

    __slots__ = (
        "bounds",
        "buckets",
        "cancelled",
        "created",
        "failed",
        "idle",
        "succeeded",
        "total",
    )

    def __init__(self, bounds: tuple[float, ...]) -> None:
        # A finished call object, handed to the next call instead of making a new one (the
        # allocation was an eighth of the cost). Only a call that has exited is put here.
        self.idle: Any = None
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        self.created = time.time()

    def record(self, elapsed: float, exc: BaseException | None) -> None:
        self.buckets[bisect_left(self.bounds, elapsed)] += 1  # le: the first bound >= elapsed
        self.total += elapsed
        if exc is None:
            self.succeeded += 1
        elif isinstance(exc, Exception):
            self.failed += 1
        else:
            self.cancelled += 1


class _ClientSeries(_Series):
    """The same calls recorded through prometheus_client's own metric objects. Used when it
    runs in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), where every value has to reach its
    shared files."""

    __slots__ = ("_calls", "_duration", "_labels", "_outcomes", "_tenant")

    def __init__(
        self, calls: Counter, duration: Histogram, labels: tuple[str, ...], tenant: bool
    ) -> None:
        self.idle = None
        self._calls = calls
        self._labels = labels
        self._tenant = tenant
        self._duration = duration.labels(*labels)
        self._outcomes: dict[str, Any] = {}

    def record(self, elapsed: float, exc: BaseException | None) -> None:
        self._duration.observe(elapsed)
        outcome = _outcome(exc)
        child = self._outcomes.get(outcome)
        if child is None:
            labels = self._labels
            values = (*labels[:-1], outcome, labels[-1]) if self._tenant else (*labels, outcome)
            child = self._outcomes[outcome] = self._calls.labels(*values)
        child.inc()


class _Call:
    """Times one publish or handler call into its series, recording inline: this runs on every
    message. Made without an ``__init__``, and reused: on exit it becomes its series' idle call,
    which the next call on that series takes instead of allocating (a call in progress is never
    idle, so concurrent calls on one series each hold their own object)."""

    __slots__ = ("series", "start")
    series: _Series
    start: float

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = perf_counter() - self.start
        series = self.series  # _Series.record, inlined
        series.buckets[bisect_left(series.bounds, elapsed)] += 1
        series.total += elapsed
        if exc is None:
            series.succeeded += 1
        elif isinstance(exc, Exception):
            series.failed += 1
        else:
            series.cancelled += 1
        series.idle = self


class _Handling(_Call):
    __slots__ = ()

    def __enter__(self) -> None:
        self.start = perf_counter()


class _Publishing(_Call):
    __slots__ = ()

    def __enter__(self) -> Mapping[str, str]:
        self.start = perf_counter()
        return _NO_HEADERS


class _ClientCall(_Call):
    __slots__ = ()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        series = self.series
        series.record(perf_counter() - self.start, exc)
        series.idle = self


class _ClientHandling(_ClientCall, _Handling):
    __slots__ = ()


class _ClientPublishing(_ClientCall, _Publishing):
    __slots__ = ()


class _Metrics:
    """The metrics of one registry, shared by every observer registered on it.

    Publishes and handler calls are kept as :class:`_Series` and turned into the counter and
    histogram families at scrape time by :class:`_FamiliesCollector`: prometheus_client's own
    ``inc()`` and ``observe()`` take a lock each and walk the buckets in Python, which on a fast
    consumer cost more than handling the message. Retries, dead letters and errors are rare and
    use prometheus_client's Counter.
    """

    def __init__(
        self, registry: CollectorRegistry, tenant_label: bool, buckets: tuple[float, ...]
    ) -> None:
        self.tenant_label = tenant_label
        self.buckets = buckets
        self.bounds = _bounds(buckets)
        le: list[str] = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self._le = [*le, "+Inf"]
        self._extra = ("tenant_id",) if tenant_label else ()
        self.caches: dict[str, dict[tuple[Any, ...], _Series]] = {
            _PUBLISH: {},
            _CONSUME: {},
        }
        self._lock = threading.Lock()  # guards _series against a scrape while a series is added
        self._series: dict[tuple[str, tuple[str, ...]], _Series] = {}
        self._client: dict[str, tuple[Counter, Histogram]] = {}
        self.handling: type[_Handling] = _Handling
        self.publishing: type[_Publishing] = _Publishing
        if _client_values.ValueClass is _client_values.MutexValue:
            registry.register(_FamiliesCollector(self.families))
        else:  # multiprocess mode: values must go through prometheus_client's value files
            self.handling, self.publishing = _ClientHandling, _ClientPublishing
            for kind, ((calls, calls_help), (duration, duration_help), labels) in _FAMILIES.items():
                self._client[kind] = (
                    Counter(
                        calls, calls_help, (*labels, "outcome", *self._extra), registry=registry
                    ),
                    Histogram(
                        duration,
                        duration_help,
                        (*labels, *self._extra),
                        buckets=buckets,
                        registry=registry,
                    ),
                )
        self.retried = Counter(
            "events_retried_total",
            "Failed deliveries scheduled for another attempt.",
            ("topic", "adapter", "group", *self._extra),
            registry=registry,
        )
        self.dlq = Counter(
            "events_dlq_total",
            "Messages published to a dead-letter topic (by original topic).",
            ("topic", "adapter", "group", *self._extra),
            registry=registry,
        )
        self.errors = Counter(
            "events_errors_total",
            "Failures outside handlers (fetch, ack, redeliver, DLQ publish).",
            ("topic", "adapter", "where"),
            registry=registry,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Counter, labels: tuple[str, ...]) -> Any:
        """``metric.labels(*labels)``, cached: the label lookup is the costly part."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def series(self, kind: str, key: tuple[Any, ...], labels: tuple[str, ...]) -> _Series:
        """The series for ``labels``, remembered under the raw names in ``key``."""
        with self._lock:
            found = self._series.get((kind, labels))
            if found is None:
                if self._client:
                    calls, duration = self._client[kind]
                    found = _ClientSeries(calls, duration, labels, self.tenant_label)
                else:
                    found = _Series(self.bounds)
                self._series[(kind, labels)] = found
        cache = self.caches[kind]
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = found
        return found

    def families(self) -> list[Metric]:
        """The four call families, built from the series at this moment."""
        with self._lock:
            snapshot = list(self._series.items())
        created = _client_metrics._use_created
        out: dict[str, tuple[CounterMetricFamily, HistogramMetricFamily]] = {}
        for kind, ((calls, calls_help), (duration, duration_help), names) in _FAMILIES.items():
            out[kind] = (
                CounterMetricFamily(calls, calls_help, labels=(*names, "outcome", *self._extra)),
                HistogramMetricFamily(duration, duration_help, labels=(*names, *self._extra)),
            )
        tenant = self.tenant_label
        for (kind, labels), series in snapshot:
            if isinstance(series, _ClientSeries):
                continue
            counter, histogram = out[kind]
            counts = (series.succeeded, series.failed, series.cancelled)
            buckets = series.buckets.copy()
            total = series.total
            since = series.created
            for outcome, count in zip(_OUTCOMES, counts, strict=True):
                if count:
                    values = (*labels[:-1], outcome, labels[-1]) if tenant else (*labels, outcome)
                    counter.add_metric(values, float(count), since if created else None)
            cumulative = [
                (le, float(n)) for le, n in zip(self._le, accumulate(buckets), strict=True)
            ]
            histogram.add_metric(labels, cumulative, total)
            if created:
                histogram.samples.append(
                    Sample(
                        f"{histogram.name}_created",
                        dict(zip((*_FAMILIES[kind][2], *self._extra), labels, strict=True)),
                        since,
                    )
                )
        return [family for pair in out.values() for family in pair]


class _FamiliesCollector(Collector):
    """Hands the registry the families ``families()`` builds at each scrape. ``describe`` gives
    the same, so the registry checks our names for clashes when we register (for the backlog
    gauges that costs no broker query: they come from the last poll)."""

    def __init__(self, families: Callable[[], Sequence[Metric]]) -> None:
        self._families = families

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families()


_REGISTRIES: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_for(
    registry: CollectorRegistry, tenant_label: bool, buckets: tuple[float, ...]
) -> _Metrics:
    metrics = _REGISTRIES.get(registry)
    if metrics is None:
        try:
            metrics = _REGISTRIES[registry] = _Metrics(registry, tenant_label, buckets)
        except ValueError as exc:  # names taken by something else on this registry
            raise ConfigurationError("registry", f"cannot register event metrics: {exc}") from exc
    elif metrics.tenant_label != tenant_label or metrics.buckets != buckets:
        raise ConfigurationError(
            "tenant_label",
            "this registry already has event metrics with another tenant_label or buckets "
            "setting; use one setting per registry",
        )
    return metrics


class PrometheusObserver:
    """An Observer recording the metrics in the module docstring on ``registry``.

    Several observers (one per bus, say) may share a registry: they share its metric objects,
    provided they agree on ``tenant_label`` and ``buckets``.

    Raises:
        ConfigurationError: ``registry`` is not a CollectorRegistry, or its metric names are
            taken by other metrics or by observers with another setting.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        tenant_label: bool = False,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        if not isinstance(registry, CollectorRegistry):
            raise ConfigurationError(
                "registry", f"must be a prometheus_client CollectorRegistry, got {registry!r}"
            )
        self.registry = registry
        self.tenant_label = bool(tenant_label)
        self._m = _metrics_for(registry, self.tenant_label, tuple(buckets))
        self._publish_cache = self._m.caches[_PUBLISH]
        self._consume_cache = self._m.caches[_CONSUME]
        self._publishing = self._m.publishing
        self._handling = self._m.handling

    def publishing(self, event: Event, *, adapter: str) -> _Publishing:
        if self.tenant_label:
            key: tuple[Any, ...] = (event.topic, adapter, event.tenant_id)
        else:
            key = (event.topic, adapter)
        series = self._publish_cache.get(key)
        if series is None:
            labels: tuple[str, ...] = (_topic_label(event.topic), adapter)
            if self.tenant_label:
                labels += (event.tenant_id or "",)
            series = self._m.series(_PUBLISH, key, labels)
        call = series.idle
        if call is None:
            call = self._publishing()
            call.series = series
        else:
            series.idle = None
        return call  # type: ignore[no-any-return]

    def consuming(self, event: Event, *, group: str, adapter: str) -> _Handling:
        if self.tenant_label:
            key: tuple[Any, ...] = (event.topic, adapter, group, event.tenant_id)
        else:
            key = (event.topic, adapter, group)
        series = self._consume_cache.get(key)
        if series is None:
            labels: tuple[str, ...] = (_topic_label(event.topic), adapter, _group_label(group))
            if self.tenant_label:
                labels += (event.tenant_id or "",)
            series = self._m.series(_CONSUME, key, labels)
        call = series.idle
        if call is None:
            call = self._handling()
            call.series = series
        else:
            series.idle = None
        return call  # type: ignore[no-any-return]

    def _publish_series(self, event: Event, adapter: str) -> _Series:
        """The series ``publishing()`` records into (for ObservabilityHooks' fused path)."""
        call = self.publishing(event, adapter=adapter)
        series = call.series
        series.idle = call
        return series

    def _consume_series(self, event: Event, group: str, adapter: str) -> _Series:
        """The series ``consuming()`` records into (for ObservabilityHooks' fused path)."""
        call = self.consuming(event, group=group, adapter=adapter)
        series = call.series
        series.idle = call
        return series

    def _count(
        self, counter: Counter, topic: str, adapter: str, group: str, event: Event | None
    ) -> None:
        m = self._m
        labels: tuple[str, ...] = (_topic_label(topic), adapter, _group_label(group))
        if m.tenant_label:
            labels += ((event.tenant_id if event else None) or "",)
        m.child(counter, labels).inc()

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
        self._count(self._m.retried, event.topic, adapter, group, event)

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
        self._count(self._m.dlq, topic, adapter, group, event)

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        m = self._m
        m.child(m.errors, (_topic_label(topic), adapter, where)).inc()


# --- backlog gauges ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    bus: EventBus
    topic: str
    group: str | None
    dlq_topic: str | None = None


class BacklogMonitor:
    """Exports ``bus.stats(topic, group)`` for watched pairs as Prometheus gauges::

        events_topic_length                [topic, adapter]         messages held for the topic
        events_dlq_depth                   [topic, adapter]         messages on its DLQ topic
        events_consumer_lag                [topic, adapter, group]  not yet handed to the group
        events_pending                     [topic, adapter, group]  handed out, not acked
        events_oldest_pending_age_seconds  [topic, adapter, group]  since its first delivery

    Numbers are refreshed by a background task every ``interval`` seconds (or by
    :meth:`refresh`), never during a scrape, so scraping costs no broker round trip and may
    come from any thread. The cost is bounded: one ``stats()`` call per watched pair per
    interval, at most ``max_concurrency`` at once, each cut off after ``timeout`` seconds. A
    pair whose query failed has no samples until a later refresh succeeds. A value the
    transport cannot tell (None) is left out: Kafka's pending figures exist only in a
    process consuming the group (see ``KafkaBus.stats``). ``events_dlq_depth`` counts the
    dead-letter topic ``stats`` picks (see ``EventBus.stats``); pass ``dlq_topic`` to
    :meth:`watch` when this bus does not consume the group and its DLQ topic is custom.

    Use one monitor per registry; it can watch pairs on several buses.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        interval: float = 15.0,
        timeout: float = 5.0,
        max_concurrency: int = 8,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError("interval", f"must be > 0 seconds, got {interval!r}")
        if timeout <= 0:
            raise ConfigurationError("timeout", f"must be > 0 seconds, got {timeout!r}")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError(
                "max_concurrency", f"must be an int >= 1, got {max_concurrency!r}"
            )
        registry = REGISTRY if registry is None else registry
        if not isinstance(registry, CollectorRegistry):
            raise ConfigurationError(
                "registry", f"must be a prometheus_client CollectorRegistry, got {registry!r}"
            )
        self.interval = interval
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.registry = registry
        self._targets: dict[tuple[int, str, str | None], _Target] = {}
        self._values: dict[_Target, BacklogStats] = {}
        self._task: asyncio.Task[None] | None = None
        self._collector = _FamiliesCollector(self._families)
        try:
            registry.register(self._collector)
        except ValueError as exc:
            raise ConfigurationError(
                "registry", f"already has backlog gauges (one BacklogMonitor per registry): {exc}"
            ) from exc

    def watch(
        self, bus: EventBus, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> None:
        """Export backlog numbers for ``topic`` (and ``group``) on ``bus``; ``dlq_topic`` is
        the dead-letter topic to count, when ``bus`` cannot tell it (see ``EventBus.stats``)."""
        self._targets[(id(bus), topic, group)] = _Target(bus, topic, group, dlq_topic)

    def unwatch(self, bus: EventBus, topic: str, group: str | None = None) -> None:
        """Stop exporting a pair (its samples go at the next refresh)."""
        self._targets.pop((id(bus), topic, group), None)

    async def refresh(self) -> None:
        """Query every watched pair once, now."""
        targets = list(self._targets.values())
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(target: _Target) -> tuple[_Target, BacklogStats | None]:
            async with limit:
                try:
                    async with asyncio.timeout(self.timeout):
                        stats = await target.bus.stats(
                            target.topic, target.group, dlq_topic=target.dlq_topic
                        )
                        return target, stats
                except Exception as exc:
                    logger.warning(
                        "%s: backlog of %s (group %s) unavailable: %r",
                        target.bus.adapter,
                        target.topic,
                        target.group,
                        exc,
                    )
                    return target, None

        results = await asyncio.gather(*(one(t) for t in targets))
        self._values = {t: stats for t, stats in results if stats is not None}

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Start refreshing in the background (first refresh done before this returns)."""
        if self._task is None:
            await self.refresh()
            self._task = asyncio.create_task(self._run(), name="dotmac-backlog-monitor")

    async def stop(self) -> None:
        """Stop the background refresh. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def close(self) -> None:
        """Remove the gauges from the registry (call :meth:`stop` first)."""
        self.registry.unregister(self._collector)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _families(self) -> list[GaugeMetricFamily]:
        topic_labels = ("topic", "adapter")
        group_labels = ("topic", "adapter", "group")
        length = GaugeMetricFamily(
            "events_topic_length", "Messages held for the topic.", labels=topic_labels
        )
        dlq = GaugeMetricFamily(
            "events_dlq_depth",
            "Messages held on the topic's dead-letter topic.",
            labels=topic_labels,
        )
        lag = GaugeMetricFamily(
            "events_consumer_lag",
            "Messages the group has not been handed yet.",
            labels=group_labels,
        )
        pending = GaugeMetricFamily(
            "events_pending", "Messages handed to the group and not acked.", labels=group_labels
        )
        age = GaugeMetricFamily(
            "events_oldest_pending_age_seconds",
            "Seconds since the group's oldest pending message was first delivered.",
            labels=group_labels,
        )
        seen: set[tuple[str, str]] = set()
        for target, stats in self._values.items():  # _values is swapped whole, never mutated
            adapter = target.bus.adapter
            per_topic = (stats.topic, adapter)
            if per_topic not in seen:
                seen.add(per_topic)
                if stats.length is not None:
                    length.add_metric(per_topic, stats.length)
                if stats.dlq_depth is not None:
                    dlq.add_metric(per_topic, stats.dlq_depth)
            if stats.group is None:
                continue
            per_group = (stats.topic, adapter, stats.group)
            if stats.lag is not None:
                lag.add_metric(per_group, stats.lag)
            if stats.pending is not None:
                pending.add_metric(per_group, stats.pending)
            if stats.oldest_pending_age is not None:
                age.add_metric(per_group, stats.oldest_pending_age)
        return [length, dlq, lag, pending, age]
