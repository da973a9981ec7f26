"""Shared fixtures. Broker fixtures live in tests/support and are imported here."""

# redis fixtures
# kafka fixtures
