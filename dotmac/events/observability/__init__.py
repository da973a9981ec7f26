"""Observer hooks; Prometheus and OpenTelemetry observers live in their own modules."""

from dotmac.events.observability.observer import CompositeObserver, NoopObserver, Observer

__all__ = ["CompositeObserver", "NoopObserver", "Observer"]
