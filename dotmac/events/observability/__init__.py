"""Observer hooks and what is built on them.

This package imports no extra: Prometheus lives in ``observability.prometheus`` and
OpenTelemetry in ``observability.otel``, each imported only by whoever uses it.
"""

from dotmac.events.observability.collector import MetricsCollector, MetricsReport, TopicReport
from dotmac.events.observability.health import HealthChecker
from dotmac.events.observability.hooks import (
    ObservabilityHooks,
    create_default_hooks,
    create_dotmac_observability_hooks,
)
from dotmac.events.observability.logs import LoggingObserver
from dotmac.events.observability.observer import CompositeObserver, NoopObserver, Observer

__all__ = [
    "CompositeObserver",
    "HealthChecker",
    "LoggingObserver",
    "MetricsCollector",
    "MetricsReport",
    "NoopObserver",
    "ObservabilityHooks",
    "Observer",
    "TopicReport",
    "create_default_hooks",
    "create_dotmac_observability_hooks",
]
