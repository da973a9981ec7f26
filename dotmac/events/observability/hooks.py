"""Ready-made observer bundles: pass one as ``observer=`` to any bus factory.

``create_default_hooks()`` needs no extra: logging plus an in-process MetricsCollector.
``create_dotmac_observability_hooks()`` adds Prometheus metrics (extra ``prometheus``) and, when
``opentelemetry-api`` is installed, tracing (extra ``otel``). Both extras are imported only here,
when called, so ``import dotmac.events`` stays free of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dotmac.events.observability.collector import MetricsCollector
from dotmac.events.observability.logs import LoggingObserver
from dotmac.events.observability.observer import CompositeObserver, Observer

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from dotmac.events.observability.otel import TracingObserver
    from dotmac.events.observability.prometheus import PrometheusObserver

__all__ = ["ObservabilityHooks", "create_default_hooks", "create_dotmac_observability_hooks"]


class ObservabilityHooks(CompositeObserver):
    """A CompositeObserver that keeps its parts at hand: ``hooks.collector.report()``."""

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
