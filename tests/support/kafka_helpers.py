"""Test settings for the Kafka bus on a local broker, and unique topic names."""

from __future__ import annotations

import uuid
from typing import Any

from dotmac.events.adapters.kafka_config import KafkaConfig

__all__ = ["kafka_test_config", "unique_topic"]


def kafka_test_config(bootstrap: str, **overrides: Any) -> KafkaConfig:
    """Fast group joins and short fetch waits (Tansu does not wake a waiting fetch on new data)."""
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "fetch_max_wait_ms": 30,
        "linger_ms": 1,
        "revoke_timeout_ms": 3000,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 20_000,
        "close_timeout": 5.0,
    }
    settings.update(overrides)
    return KafkaConfig(**settings)


def unique_topic(name: str) -> str:
    return f"test.{name}.{uuid.uuid4().hex[:10]}"
