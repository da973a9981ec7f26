"""Shared fixtures. Broker fixtures live in tests/support and are imported here."""

# redis fixtures
# kafka fixtures
# isort: split
from tests.support.kafka_server import kafka_bootstrap  # noqa: F401
