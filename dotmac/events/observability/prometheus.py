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

:class:`BacklogMonitor` exports what ``bus.stats()`` knows as gauges (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "prometheus_client is not installed; Prometheus metrics need it: "
        'pip install "dotmac-events[prometheus]"'
    ) from exc

from dotmac.events.bus import BacklogStats, EventBus
from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event
from dotmac.events.observability.timing import Timed

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

T = TypeVar("T")
_Meter = Timed[T, Counter, Histogram, tuple[str, ...], Event]
"""What publishing() and consuming() return: times the call, then PrometheusObserver._record."""


def _topic_label(topic: str) -> str:
    return "_inbox" if topic.startswith(_INBOX_PREFIX) else topic


def _group_label(group: str) -> str:
    if len(group) == _PRIVATE_GROUP_LENGTH and group.startswith("private-"):
        return "private"
    return group


class _Metrics:
    """The metric objects of one registry, shared by every observer registered on it."""

    def __init__(
        self, registry: CollectorRegistry, tenant_label: bool, buckets: tuple[float, ...]
    ) -> None:
        self.tenant_label = tenant_label
        self.buckets = buckets
        extra = ("tenant_id",) if tenant_label else ()
        self.published = Counter(
            "events_published_total",
            "Events published, by outcome.",
            ("topic", "adapter", "outcome", *extra),
            registry=registry,
        )
        self.publish_duration = Histogram(
            "event_publish_duration_seconds",
            "Time until the transport accepted a publish.",
            ("topic", "adapter", *extra),
            buckets=buckets,
            registry=registry,
        )
        self.consumed = Counter(
            "events_consumed_total",
            "Handler calls, by outcome (each retry is a call).",
            ("topic", "adapter", "group", "outcome", *extra),
            registry=registry,
        )
        self.consume_duration = Histogram(
            "event_consume_duration_seconds",
            "Handler call duration.",
            ("topic", "adapter", "group", *extra),
            buckets=buckets,
            registry=registry,
        )
        self.retried = Counter(
            "events_retried_total",
            "Failed deliveries scheduled for another attempt.",
            ("topic", "adapter", "group", *extra),
            registry=registry,
        )
        self.dlq = Counter(
            "events_dlq_total",
            "Messages published to a dead-letter topic (by original topic).",
            ("topic", "adapter", "group", *extra),
            registry=registry,
        )
        self.errors = Counter(
            "events_errors_total",
            "Failures outside handlers (fetch, ack, redeliver, DLQ publish).",
            ("topic", "adapter", "where"),
            registry=registry,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Counter | Histogram, labels: tuple[str, ...]) -> Any:
        """``metric.labels(*labels)``, cached: the label lookup is the costly part."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


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

    def publishing(self, event: Event, *, adapter: str) -> _Meter[Mapping[str, str]]:
        m = self._m
        labels = (_topic_label(event.topic), adapter)
        return Timed(self._record, _NO_HEADERS, m.published, m.publish_duration, labels, event)

    def consuming(self, event: Event, *, group: str, adapter: str) -> _Meter[None]:
        m = self._m
        labels = (_topic_label(event.topic), adapter, _group_label(group))
        return Timed(self._record, None, m.consumed, m.consume_duration, labels, event)

    def _count(
        self, counter: Counter, topic: str, adapter: str, group: str, event: Event | None
    ) -> None:
        m = self._m
        labels: tuple[str, ...] = (_topic_label(topic), adapter, _group_label(group))
        if m.tenant_label:
            labels += ((event.tenant_id if event else None) or "",)
        m.child(counter, labels).inc()

    def _record(
        self,
        elapsed: float,
        exc: BaseException | None,
        calls: Counter,
        duration: Histogram,
        labels: tuple[str, ...],
        event: Event,
    ) -> None:
        """Counts one publish or handler call by outcome and observes how long it took."""
        m = self._m
        if m.tenant_label:
            tenant = event.tenant_id or ""
            m.child(calls, (*labels, _outcome(exc), tenant)).inc()
            m.child(duration, (*labels, tenant)).observe(elapsed)
        else:
            m.child(calls, (*labels, _outcome(exc))).inc()
            m.child(duration, labels).observe(elapsed)

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


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "success"
    return "error" if isinstance(exc, Exception) else "cancelled"


# --- backlog gauges ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    bus: EventBus
    topic: str
    group: str | None


class BacklogMonitor:
    """Exports ``bus.stats(topic, group)`` for watched pairs as Prometheus gauges::

        events_topic_length                [topic, adapter]         messages held for the topic
        events_dlq_depth                   [topic, adapter]         messages on its DLQ topic
        events_consumer_lag                [topic, adapter, group]  not yet handed to the group
        events_pending                     [topic, adapter, group]  handed out, not acked
        events_oldest_pending_age_seconds  [topic, adapter, group]

    Numbers are refreshed by a background task every ``interval`` seconds (or by
    :meth:`refresh`), never during a scrape, so scraping costs no broker round trip and may
    come from any thread. The cost is bounded: one ``stats()`` call per watched pair per
    interval, at most ``max_concurrency`` at once, each cut off after ``timeout`` seconds. A
    pair whose query failed has no samples until a later refresh succeeds. A value the
    transport cannot tell (None) is left out.

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
        self._collector = _BacklogCollector(self)
        try:
            registry.register(self._collector)
        except ValueError as exc:
            raise ConfigurationError(
                "registry", f"already has backlog gauges (one BacklogMonitor per registry): {exc}"
            ) from exc

    def watch(self, bus: EventBus, topic: str, group: str | None = None) -> None:
        """Export backlog numbers for ``topic`` (and ``group``) on ``bus``."""
        self._targets[(id(bus), topic, group)] = _Target(bus, topic, group)

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
                        return target, await target.bus.stats(target.topic, target.group)
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
            "Seconds since the group's oldest pending message was handed out.",
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


class _BacklogCollector(Collector):
    def __init__(self, monitor: BacklogMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> Iterable[Metric]:
        # Declared so the registry checks our names for clashes without a broker query.
        return self._monitor._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._monitor._families()
