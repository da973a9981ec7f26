"""Transports. Redis, Kafka and NATS load lazily: the core never imports their client libraries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from dotmac.events.adapters.kafka import KafkaBus
    from dotmac.events.adapters.kafka_config import KafkaConfig
    from dotmac.events.adapters.nats import NatsJetStreamBus
    from dotmac.events.adapters.nats_config import NatsConfig
    from dotmac.events.adapters.redis import RedisStreamsBus
    from dotmac.events.adapters.redis_cluster import RedisClusterBus
    from dotmac.events.adapters.redis_cluster_config import RedisClusterConfig
    from dotmac.events.adapters.redis_config import RedisConfig
    from dotmac.events.codec import Codec
    from dotmac.events.observability.observer import Observer

__all__ = ["create_kafka_bus", "create_nats_bus", "create_redis_bus", "create_redis_cluster_bus"]


def _missing_extra(extra: str, module: str, exc: ImportError) -> ImportError:
    return ImportError(
        f"{module} is not installed; the {extra} adapter needs it: "
        f'pip install "dotmac-events[{extra}]"'
    )


def create_redis_bus(
    config: RedisConfig | None = None,
    *,
    client: Redis | None = None,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> RedisStreamsBus:
    """Create a Redis Streams bus (see :func:`dotmac.events.adapters.redis.create_redis_bus`).

    Raises:
        ImportError: the ``redis`` extra is not installed (the message gives the pip line).
    """
    try:
        import redis.asyncio  # noqa: F401
    except ImportError as exc:
        raise _missing_extra("redis", "redis", exc) from exc
    from dotmac.events.adapters.redis import create_redis_bus as factory

    return factory(config, client=client, codec=codec, observer=observer)


def create_redis_cluster_bus(
    config: RedisClusterConfig | None = None,
    *,
    client: RedisCluster | None = None,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> RedisClusterBus:
    """Create a Redis Cluster bus (see
    :func:`dotmac.events.adapters.redis_cluster.create_redis_cluster_bus`).

    Raises:
        ImportError: the ``redis`` extra is not installed (the message gives the pip line).
    """
    try:
        import redis.asyncio  # noqa: F401
    except ImportError as exc:
        raise _missing_extra("redis", "redis", exc) from exc
    from dotmac.events.adapters.redis_cluster import create_redis_cluster_bus as factory

    return factory(config, client=client, codec=codec, observer=observer)


def create_kafka_bus(
    config: KafkaConfig | None = None,
    *,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> KafkaBus:
    """Create a Kafka bus (see :func:`dotmac.events.adapters.kafka.create_kafka_bus`).

    Raises:
        ImportError: the ``kafka`` extra is not installed (the message gives the pip line).
    """
    try:
        import aiokafka  # noqa: F401
    except ImportError as exc:
        raise _missing_extra("kafka", "aiokafka", exc) from exc
    from dotmac.events.adapters.kafka import create_kafka_bus as factory

    return factory(config, codec=codec, observer=observer)


def create_nats_bus(
    config: NatsConfig | None = None,
    *,
    client: Any = None,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> NatsJetStreamBus:
    """Create a NATS JetStream bus (see :func:`dotmac.events.adapters.nats.create_nats_bus`).

    ``client`` is a connected ``nats.aio.client.Client`` to share (the bus never closes it).

    Raises:
        ImportError: the ``nats`` extra is not installed (the message gives the pip line).
    """
    try:
        import nats  # noqa: F401
    except ImportError as exc:
        raise _missing_extra("nats", "nats-py", exc) from exc
    from dotmac.events.adapters.nats import create_nats_bus as factory

    return factory(config, client=client, codec=codec, observer=observer)
