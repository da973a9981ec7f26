"""MetricsCollector: an in-process observer that answers "how is each topic doing?" without a
metrics server: counts, success rate, average and p99 latency, and throughput per topic.

Memory is bounded: latencies keep the last ``max_samples`` per topic (p99 is over those, the
average over all of them), and throughput counts handled messages per second over the last
``window`` seconds in one-second buckets.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, TypeVar

from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event
from dotmac.events.observability.timing import Timed

__all__ = ["MetricsCollector", "MetricsReport", "TopicReport"]

_NO_HEADERS: Mapping[str, str] = {}
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicReport:
    """What happened on one topic, across every group consuming it.

    ``success_rate`` is successful handler calls over all handler calls (a call that failed and
    was retried counts as one failure), None before the first call. Latencies are handler
    durations in milliseconds; ``throughput`` is handler calls per second over the window.
    """

    topic: str
    published: int
    publish_errors: int
    consumed: int
    failed: int
    retried: int
    dead_lettered: int
    success_rate: float | None
    avg_latency_ms: float | None
    p99_latency_ms: float | None
    publish_avg_latency_ms: float | None
    publish_p99_latency_ms: float | None
    throughput: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsReport:
    """A snapshot of every topic seen, plus totals over all of them."""

    topics: dict[str, TopicReport]
    published: int
    consumed: int
    failed: int
    retried: int
    dead_lettered: int
    errors: int
    success_rate: float | None
    throughput: float
    uptime_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts and numbers, ready for JSON."""
        return asdict(self)

    def format(self) -> str:
        """A fixed-width text table, one line per topic."""
        head = (
            f"{'topic':<28} {'pub':>7} {'ok':>7} {'fail':>6} {'retry':>6} {'dlq':>5} "
            f"{'success':>8} {'avg ms':>8} {'p99 ms':>8} {'msg/s':>8}"
        )
        lines = [head, "-" * len(head)]
        for name in sorted(self.topics):
            t = self.topics[name]
            lines.append(
                f"{name[:28]:<28} {t.published:>7} {t.consumed:>7} {t.failed:>6} "
                f"{t.retried:>6} {t.dead_lettered:>5} {_pct(t.success_rate):>8} "
                f"{_num(t.avg_latency_ms):>8} {_num(t.p99_latency_ms):>8} {t.throughput:>8.1f}"
            )
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class _Samples:
    """Running count and sum, plus the last ``size`` values for percentiles."""

    __slots__ = ("count", "recent", "total")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.recent.append(value)

    def average_ms(self, count: int) -> float | None:
        """The average of the ``count`` values added (ObservabilityHooks' fused path adds to
        ``total`` without counting: the topic's call counts say how many)."""
        return None if count == 0 else self.total / count * 1000

    def p99_ms(self) -> float | None:
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[math.ceil(0.99 * len(ordered)) - 1] * 1000


class _Topic:
    __slots__ = (
        "buckets",
        "consume",
        "consumed",
        "dead_lettered",
        "failed",
        "idle",
        "mark",
        "publish",
        "publish_errors",
        "published",
        "retried",
        "until",
        "window",
    )

    def __init__(self, samples: int, window: float) -> None:
        self.window = window
        self.idle: _Handling | None = None  # a finished call, reused by the next one
        self.published = 0
        self.publish_errors = 0
        self.consumed = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.consume = _Samples(samples)
        self.publish = _Samples(samples)
        # [second, handler calls]; the last bucket's count is not kept up to date: it is
        # consumed + failed - mark (see _roll), so a handler call only compares the clock.
        self.buckets: deque[list[int]] = deque()
        self.mark = 0  # consumed + failed when the last bucket was opened
        self.until = -math.inf  # the clock reading from which the last bucket is past


class _Timer(Timed[T, _Topic]):
    """Timed on this module's clock (``time.perf_counter``, which throughput reads too)."""

    __slots__ = ()

    @staticmethod
    def clock() -> float:
        return time.perf_counter()


class _Handling:
    """Times one handler call into its topic. Made without an ``__init__`` and, once exited,
    reused by the topic's next call (a call in progress is never reused): this runs on every
    message. One clock reading on exit gives both the duration and the throughput second."""

    __slots__ = ("start", "topic")
    start: float
    topic: _Topic

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        now = time.perf_counter()
        topic = self.topic
        topic.idle = self
        if exc is not None and not isinstance(exc, Exception):
            return  # cancelled by close: the message goes back unacked, not a handler outcome
        if now >= topic.until:
            _roll(topic, now)
        topic.consume.add(now - self.start)
        if exc is None:
            topic.consumed += 1
        else:
            topic.failed += 1


def _roll(topic: _Topic, now: float) -> None:
    """Open the throughput bucket of ``int(now)``: call before counting a handler call made in a
    later second than the last bucket's. The last bucket's count becomes final."""
    calls = topic.consumed + topic.failed
    buckets = topic.buckets
    if buckets:
        buckets[-1][1] = calls - topic.mark
    topic.mark = calls
    second = int(now)
    buckets.append([second, 0])
    while buckets[0][0] <= second - topic.window:
        buckets.popleft()
    topic.until = second + 1


def _published(elapsed: float, exc: BaseException | None, topic: _Topic) -> None:
    topic.publish.add(elapsed)
    if exc is None:
        topic.published += 1
    else:
        topic.publish_errors += 1


class MetricsCollector:
    """An Observer that keeps per-topic numbers in memory; read them with :meth:`report`.

    Counts cover every group consuming a topic. It is meant for one event loop (no locking).
    """

    def __init__(self, *, max_samples: int = 1000, window: float = 60.0) -> None:
        if not isinstance(max_samples, int) or max_samples < 1:
            raise ConfigurationError("max_samples", f"must be an int >= 1, got {max_samples!r}")
        if window <= 0:
            raise ConfigurationError("window", f"must be > 0 seconds, got {window!r}")
        self.max_samples = max_samples
        self.window = window
        self._topics: dict[str, _Topic] = {}
        # Caches others keep of this collector's topics (ObservabilityHooks' fused path); reset()
        # empties them with _topics.
        self._topic_caches: list[dict[Any, Any]] = []
        self._errors = 0
        self._started = time.perf_counter()

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(self.max_samples, self.window)
        return topic

    # --- Observer ------------------------------------------------------------------------------

    def publishing(self, event: Event, *, adapter: str) -> _Timer[Mapping[str, str]]:
        return _Timer(_published, _NO_HEADERS, self._topic(event.topic))

    def consuming(self, event: Event, *, group: str, adapter: str) -> _Handling:
        topic = self._topics.get(event.topic)
        if topic is None:
            topic = self._topic(event.topic)
        call = topic.idle
        if call is None:
            call = _Handling()
            call.topic = topic
        else:
            topic.idle = None
        return call

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
        self._topic(event.topic).retried += 1

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
        self._topic(topic).dead_lettered += 1

    def error(self, topic: str, *, adapter: str, where: str, error: BaseException) -> None:
        self._errors += 1

    # --- reading ------------------------------------------------------------------------------

    def _throughput(self, topic: _Topic, now: float) -> float:
        horizon = now - self.window
        buckets = topic.buckets
        live = topic.consumed + topic.failed - topic.mark  # the last bucket's count
        calls = sum(
            live if i == len(buckets) - 1 else n
            for i, (second, n) in enumerate(buckets)
            if second + 1 > horizon
        )
        span = min(self.window, max(now - self._started, 1.0))
        return calls / span

    def report(self) -> MetricsReport:
        """A snapshot of every topic seen so far (cost grows with topics x max_samples)."""
        now = time.perf_counter()
        topics: dict[str, TopicReport] = {}
        for name, t in self._topics.items():
            calls = t.consumed + t.failed
            topics[name] = TopicReport(
                topic=name,
                published=t.published,
                publish_errors=t.publish_errors,
                consumed=t.consumed,
                failed=t.failed,
                retried=t.retried,
                dead_lettered=t.dead_lettered,
                success_rate=t.consumed / calls if calls else None,
                avg_latency_ms=t.consume.average_ms(calls),
                p99_latency_ms=t.consume.p99_ms(),
                publish_avg_latency_ms=t.publish.average_ms(t.published + t.publish_errors),
                publish_p99_latency_ms=t.publish.p99_ms(),
                throughput=self._throughput(t, now),
            )
        consumed = sum(t.consumed for t in topics.values())
        failed = sum(t.failed for t in topics.values())
        return MetricsReport(
            topics=topics,
            published=sum(t.published for t in topics.values()),
            consumed=consumed,
            failed=failed,
            retried=sum(t.retried for t in topics.values()),
            dead_lettered=sum(t.dead_lettered for t in topics.values()),
            errors=self._errors,
            success_rate=consumed / (consumed + failed) if consumed + failed else None,
            throughput=sum(t.throughput for t in topics.values()),
            uptime_seconds=now - self._started,
        )

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._topics.clear()
        for cache in self._topic_caches:
            cache.clear()
        self._errors = 0
        self._started = time.perf_counter()
