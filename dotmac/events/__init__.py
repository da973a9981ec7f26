"""dotmac-events: publish and consume events through one small API on memory, Redis, Kafka or NATS.

Importing this package imports no broker client: ``create_redis_bus``, ``create_kafka_bus``,
``create_nats_bus`` and ``create_redis_cluster_bus`` load their adapter (and its extra) only when
called.
"""

from typing import TYPE_CHECKING, Any

from dotmac.events.adapters import (
    create_kafka_bus,
    create_nats_bus,
    create_redis_bus,
    create_redis_cluster_bus,
)
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.adapters.memory import MemoryBus, MemoryConfig, create_memory_bus
from dotmac.events.adapters.nats_config import NatsConfig
from dotmac.events.adapters.redis_cluster_config import RedisClusterConfig
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import (
    BacklogStats,
    EventBus,
    EventHandler,
    HealthStatus,
    ReadRecord,
    Subscription,
    SubscriptionSet,
)
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.consumer import (
    ConsumerOptions,
    RetryPolicy,
    create_exponential_retry_options,
    run_consumer,
)
from dotmac.events.dlq import (
    DLQEntry,
    SimpleDLQ,
    alert_on_dlq_entry,
    create_dlq_consumer,
    log_dlq_entry,
)
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
from dotmac.events.event import DeliveryInfo, Event, EventMetadata
from dotmac.events.middleware import CallNext, ConsumeMiddleware, PublishHook
from dotmac.events.observability import (
    HealthChecker,
    LoggingObserver,
    MetricsCollector,
    MetricsReport,
    ObservabilityHooks,
    create_default_hooks,
    create_dotmac_observability_hooks,
)
from dotmac.events.observability.observer import CompositeObserver, NoopObserver, Observer
from dotmac.events.policy import FailurePolicy, RedeliverPolicy
from dotmac.events.registry import HandlerRegistry, HandlerRoute, event_handler
from dotmac.events.router import EventRouter
from dotmac.events.urls import create_bus

if TYPE_CHECKING:
    from dotmac.events.adapters.kafka import KafkaBus as KafkaBus
    from dotmac.events.adapters.nats import NatsJetStreamBus as NatsJetStreamBus
    from dotmac.events.adapters.redis import RedisStreamsBus as RedisStreamsBus

_LAZY = {  # extra-backed classes: attributes, not in __all__, so `import *` needs no extra
    "KafkaBus": "dotmac.events.adapters.kafka",
    "NatsJetStreamBus": "dotmac.events.adapters.nats",
    "RedisStreamsBus": "dotmac.events.adapters.redis",
}


def __getattr__(name: str) -> Any:
    """Load extra-backed classes (``KafkaBus``) only when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dotmac.events' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


from dotmac.events.version import __version__ as __version__  # noqa: E402

__all__ = [
    "AuthenticationError",
    "BacklogStats",
    "BatchFailed",
    "BusClosedError",
    "CallNext",
    "Codec",
    "CodecError",
    "CompositeObserver",
    "ConfigurationError",
    "ConsumeMiddleware",
    "ConsumerOptions",
    "DLQEntry",
    "DecodeError",
    "DeliveryInfo",
    "EncodeError",
    "Event",
    "EventBus",
    "EventBusError",
    "EventHandler",
    "EventMetadata",
    "EventRouter",
    "ExponentialBackoff",
    "FailurePolicy",
    "HandlerRegistry",
    "HandlerRoute",
    "HandlerTimeout",
    "HealthChecker",
    "HealthStatus",
    "InvalidEventError",
    "JsonCodec",
    "KafkaConfig",
    "LoggingObserver",
    "MemoryBus",
    "MemoryConfig",
    "MetricsCollector",
    "MetricsReport",
    "NatsConfig",
    "NoopObserver",
    "ObservabilityHooks",
    "Observer",
    "PublishError",
    "PublishHook",
    "ReadRecord",
    "RedeliverPolicy",
    "RedisClusterConfig",
    "RedisConfig",
    "Reject",
    "RequestTimeout",
    "RetriesExhausted",
    "RetryPolicy",
    "SimpleDLQ",
    "Subscription",
    "SubscriptionSet",
    "TransportError",
    "UnsupportedOperation",
    "ValidationError",
    "alert_on_dlq_entry",
    "create_bus",
    "create_default_hooks",
    "create_dlq_consumer",
    "create_dotmac_observability_hooks",
    "create_exponential_retry_options",
    "create_kafka_bus",
    "create_memory_bus",
    "create_nats_bus",
    "create_redis_bus",
    "create_redis_cluster_bus",
    "event_handler",
    "log_dlq_entry",
    "run_consumer",
]
