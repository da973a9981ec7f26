"""KafkaConfig: validation names the field, the mapping is accepted by aiokafka, no secrets leak."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from dotmac.events import KafkaConfig, create_kafka_bus
from dotmac.events.errors import ConfigurationError

SEED_PRODUCTION: dict[str, Any] = {
    "bootstrap_servers": "kafka1:9092,kafka2:9092,kafka3:9092",
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-256",
    "sasl_username": "event-service",
    "sasl_password": "secure-password",
    "acks": "all",
    "retries": 2147483647,
    "compression_type": "gzip",  # the seed says snappy, which needs cramjam (tested below)
    "batch_size": 32768,
    "linger_ms": 10,
}


def test_defaults_are_production_safe() -> None:
    config = KafkaConfig()
    assert config.acks == "all"
    assert config.producer_kwargs()["acks"] == "all"
    assert config.enable_idempotence is False
    consumer = config.consumer_kwargs(group="g", private=False)
    assert consumer["enable_auto_commit"] is False
    assert consumer["auto_offset_reset"] == "earliest"
    assert config.consumer_kwargs(group=None, private=True)["auto_offset_reset"] == "latest"


def test_seed_fields_map_onto_real_aiokafka_parameters() -> None:
    config = KafkaConfig(**SEED_PRODUCTION)
    kwargs = config.producer_kwargs()
    assert "retries" not in kwargs and "batch_size" not in kwargs
    assert kwargs["max_batch_size"] == 32768
    assert kwargs["linger_ms"] == 10
    assert kwargs["bootstrap_servers"] == ["kafka1:9092", "kafka2:9092", "kafka3:9092"]
    assert kwargs["sasl_plain_username"] == "event-service"
    assert kwargs["sasl_plain_password"] == "secure-password"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)  # aiokafka requires one for SSL
    assert config.retries == 2147483647  # our own resend budget, bounded by delivery_timeout_ms


async def test_every_mapping_constructs_real_aiokafka_clients() -> None:
    """No TypeError or ValueError from aiokafka for the seed's production settings."""
    for options in (SEED_PRODUCTION, {}, {"acks": 1, "compression_type": None}, {"acks": -1}):
        config = KafkaConfig(**options)
        producer = AIOKafkaProducer(**config.producer_kwargs())
        consumer = AIOKafkaConsumer(**config.consumer_kwargs(group="g", private=False))
        private = AIOKafkaConsumer(**config.consumer_kwargs(group=None, private=True))
        admin = AIOKafkaAdminClient(**config.admin_kwargs())
        assert producer.client is not None
        await producer.stop()
        await consumer.stop()
        await private.stop()
        await admin.close()


def test_idempotence_maps_through() -> None:
    assert KafkaConfig(enable_idempotence=True).producer_kwargs()["enable_idempotence"] is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bootstrap_servers", ""),
        ("bootstrap_servers", "no-port"),
        ("bootstrap_servers", "host:abc"),
        ("client_id", ""),
        ("security_protocol", "TLS"),
        ("acks", 2),
        ("acks", "some"),
        ("acks", True),
        ("retries", -1),
        ("retries", 1.5),
        ("delivery_timeout_ms", 0),
        ("compression_type", "brotli"),
        ("batch_size", 0),
        ("linger_ms", -1),
        ("request_timeout_ms", 0),
        ("session_timeout_ms", 0),
        ("fetch_max_wait_ms", -5),
        ("max_poll_records", 0),
        ("max_uncommitted", 0),
        ("auto_offset_reset", "beginning"),
        ("num_partitions", 0),
        ("replication_factor", 0),
        ("enable_idempotence", "yes"),
        ("auto_create_topics", 1),
        ("close_timeout", 0),
        ("group_id_format", "{topic}"),
        ("group_id_format", "{group}{nope}"),
        ("ssl_context", "not-a-context"),
        ("sasl_mechanism", "MAGIC"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        KafkaConfig(**{field: value})
    assert info.value.field == field


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigurationError) as info:
        KafkaConfig(session_timeout_ms=2000, heartbeat_interval_ms=2000)
    assert info.value.field == "heartbeat_interval_ms"
    with pytest.raises(ConfigurationError) as info:
        KafkaConfig(enable_idempotence=True, acks=1)
    assert info.value.field == "enable_idempotence"
    with pytest.raises(ConfigurationError) as info:
        KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u")
    assert info.value.field == "sasl_password"
    with pytest.raises(ConfigurationError) as info:
        KafkaConfig(security_protocol="SASL_SSL", sasl_username="u", sasl_password="p")
    assert info.value.field == "sasl_mechanism"
    with pytest.raises(ConfigurationError) as info:
        KafkaConfig(revoke_timeout_ms=10_000, max_poll_interval_ms=5_000)
    assert info.value.field == "revoke_timeout_ms"


def test_secrets_never_in_repr_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    config = KafkaConfig(**SEED_PRODUCTION)
    assert "secure-password" not in repr(config)
    assert "secure-password" not in str(config)
    assert "event-service" in repr(config)
    with pytest.raises(ConfigurationError) as info:
        KafkaConfig(**{**SEED_PRODUCTION, "sasl_mechanism": "NOPE"})
    assert "secure-password" not in str(info.value)
    with caplog.at_level(logging.DEBUG):
        bus = create_kafka_bus(config)
    assert "secure-password" not in repr(bus.config)
    assert "secure-password" not in caplog.text


def test_compression_without_its_library_is_a_configuration_error() -> None:
    from aiokafka.codec import has_snappy

    config = KafkaConfig(compression_type="snappy")
    if has_snappy():
        assert create_kafka_bus(config).config.compression_type == "snappy"
    else:
        with pytest.raises(ConfigurationError) as info:
            create_kafka_bus(config)
        assert info.value.field == "compression_type" and "cramjam" in str(info.value)


def test_group_id_format() -> None:
    assert KafkaConfig().group_id("billing", "orders") == "billing.orders"
    assert KafkaConfig(group_id_format="{group}").group_id("billing", "orders") == "billing"


def test_config_module_imports_no_aiokafka() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dotmac.events as e; e.KafkaConfig(acks=1); "
        "assert 'aiokafka' not in sys.modules, 'aiokafka imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
