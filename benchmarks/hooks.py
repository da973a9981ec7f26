"""What observability hooks cost on the Redis consume path (concurrency 1, handler does nothing).

The same workload as the ``redis.consume_c1`` row, once with an observer and once without, so
the hooks' share of the work is as large as it gets; a real handler makes it smaller.

* prometheus: ``PrometheusObserver`` on its own registry (the metrics alone).
* bundle: ``create_dotmac_observability_hooks(CollectorRegistry(), tracing=False)``, what most
  users install (logging observer, in-process collector, Prometheus metrics).
* otel api: ``TracingObserver()`` on the global tracer provider with no SDK installed, which is
  what a library user pays before configuring tracing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from benchmarks.common import Comparison, Row, Settings
from benchmarks.redis_streams import ours_consume
from dotmac.events import create_dotmac_observability_hooks
from dotmac.events.observability.otel import TracingObserver
from dotmac.events.observability.prometheus import PrometheusObserver

__all__ = ["comparisons"]

NO_HOOKS = "the same bus and workload, no observer"


def comparisons(s: Settings) -> list[Comparison]:
    prometheus, bundle, otel = "hooks.prometheus", "hooks.bundle", "hooks.otel_api"
    return [
        Comparison(
            rows=(
                Row(
                    id=prometheus,
                    path="redis consume c1 with PrometheusObserver",
                    baseline=NO_HOOKS,
                    unit="ev/s",
                    target=(">=", 0.9),
                ),
            ),
            ours=lambda: ours_consume(
                s,
                prometheus,
                s.consume_events,
                observer=PrometheusObserver(registry=CollectorRegistry()),
            ),
            baseline=lambda: ours_consume(s, prometheus, s.consume_events),
        ),
        Comparison(
            rows=(
                Row(
                    id=bundle,
                    path="redis consume c1 with create_dotmac_observability_hooks",
                    baseline=NO_HOOKS,
                    unit="ev/s",
                    target=(">=", 0.9),
                ),
            ),
            ours=lambda: ours_consume(
                s,
                bundle,
                s.consume_events,
                observer=create_dotmac_observability_hooks(CollectorRegistry(), tracing=False),
            ),
            baseline=lambda: ours_consume(s, bundle, s.consume_events),
        ),
        Comparison(
            rows=(
                Row(
                    id=otel,
                    path="redis consume c1 with TracingObserver, OpenTelemetry API only",
                    baseline=NO_HOOKS,
                    unit="ev/s",
                    target=(">=", 0.9),
                ),
            ),
            ours=lambda: ours_consume(s, otel, s.consume_events, observer=TracingObserver()),
            baseline=lambda: ours_consume(s, otel, s.consume_events),
        ),
    ]
