"""Shared fixtures: the broker fixtures live in tests/support and are registered here."""

from tests.support.kafka_server import kafka_bootstrap  # noqa: F401
from tests.support.nats_server import nats_prefixes, nats_url  # noqa: F401
from tests.support.redis_cluster import redis_cluster_url  # noqa: F401
from tests.support.redis_server import redis_prefix, redis_url  # noqa: F401
