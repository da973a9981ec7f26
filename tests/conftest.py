"""Shared fixtures. Broker fixtures live in tests/support and are imported here."""

# redis fixtures
from tests.support.redis_server import redis_prefix, redis_url  # noqa: F401

# kafka fixtures
# isort: split
from tests.support.kafka_server import kafka_bootstrap  # noqa: F401
