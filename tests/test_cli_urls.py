"""``create_bus(url)``: scheme picks the transport, parameters map onto the config by name,
bad URLs name the bad part, and passwords never show."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dotmac.events import Event
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.adapters.memory import MemoryConfig
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.errors import ConfigurationError
from dotmac.events.urls import create_bus, parse_bus_url, redact

SECRET = "s3cr3t-Pa55"


def test_memory_parameters_are_converted() -> None:
    config = parse_bus_url("memory://?max_queue_size=50&enable_persistence=yes&publish_timeout=2.5")
    assert isinstance(config, MemoryConfig)
    assert config.max_queue_size == 50
    assert config.enable_persistence is True
    assert config.publish_timeout == 2.5


def test_redis_url_maps_parameters_and_keeps_the_connection_part() -> None:
    config = parse_bus_url(
        f"redis://app:{SECRET}@cache:6380/2?key_prefix=svc:&block_ms=200&max_stream_length=none"
        "&ssl_check_hostname=false&new_group_start=latest"
    )
    assert isinstance(config, RedisConfig)
    assert config.url == f"redis://app:{SECRET}@cache:6380/2"
    assert config.key_prefix == "svc:"
    assert config.block_ms == 200
    assert config.max_stream_length is None
    assert config.ssl_check_hostname is False
    assert config.new_group_start == "latest"
    assert SECRET not in repr(config)
    tls = parse_bus_url("rediss://cache")
    assert isinstance(tls, RedisConfig) and tls.url == "rediss://cache/0"


def test_kafka_url_takes_several_brokers_and_credentials() -> None:
    config = parse_bus_url(
        f"kafka://bob:{SECRET}@h1:9092,h2:9093?client_id=x&num_partitions=6&acks=1"
        "&security_protocol=SASL_PLAINTEXT&sasl_mechanism=PLAIN&linger_ms=0"
    )
    assert isinstance(config, KafkaConfig)
    assert config.bootstrap_list() == ["h1:9092", "h2:9093"]
    assert (config.client_id, config.num_partitions, config.acks) == ("x", 6, 1)
    assert (config.sasl_username, config.sasl_password) == ("bob", SECRET)
    assert SECRET not in repr(config)


def test_environment_variable_is_used_without_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOTMAC_EVENTS_URL", "memory://?max_queue_size=7")
    config = parse_bus_url()
    assert isinstance(config, MemoryConfig) and config.max_queue_size == 7
    monkeypatch.delenv("DOTMAC_EVENTS_URL")
    with pytest.raises(ConfigurationError, match="DOTMAC_EVENTS_URL"):
        parse_bus_url()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("amqp://localhost", "unknown scheme 'amqp'"),
        ("localhost:6379", "scheme://"),
        ("memory://?max_queue=5", "max_queue: unknown URL parameter"),
        ("memory://?max_queue_size=lots", "max_queue_size: URL parameter 'lots': expected an int"),
        ("memory://?max_queue_size=0", "max_queue_size"),
        ("redis://localhost?block_ms=1.5", "block_ms"),
        ("redis://localhost?ssl=maybe", "ssl: URL parameter 'maybe': expected a bool"),
        ("redis://localhost?host=other", "host: unknown URL parameter"),
        ("redis://localhost:port", "port must be a number"),
        ("redis://localhost/zero", "database number"),
        ("redis://?key_prefix=a", "needs a host"),
        ("kafka://h1:9092?acks=2", "acks: URL parameter '2': expected one of all, 0, 1, -1"),
        ("kafka://h1?client_id=x", "bootstrap_servers"),
        ("kafka://h1:9092?client_id=x&client_id=y", "client_id: URL parameter given twice"),
    ],
)
def test_bad_urls_name_the_bad_part(url: str, named: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_bus_url(url)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:{SECRET}@localhost:6379/0?nope=1",
        f"redis://u:{SECRET}@localhost:bad/0",
        f"redis://localhost?password={SECRET}&block_ms=x",
        f"kafka://u:{SECRET}@h1:9092?security_protocol=SASL_SSL",
        f"kafka://u:{SECRET}@h1:9092?acks=7",
        f"kafka://h1:9092?sasl_password={SECRET}&linger_ms=-1",
        f"amqp://u:{SECRET}@h",
        f"nats://u:{SECRET}@h?nope=1",
    ],
)
def test_passwords_never_appear_in_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_bus_url(url)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None or SECRET not in str(caught.value.__cause__)
    assert SECRET not in redact(url)


def test_redact_hides_userinfo_and_password_parameters() -> None:
    assert redact(f"redis://u:{SECRET}@h:1/0?password={SECRET}&a=1") == (
        "redis://u:***@h:1/0?password=***&a=1"
    )
    assert redact("kafka://h1:9092,h2:9092?client_id=x") == "kafka://h1:9092,h2:9092?client_id=x"


async def test_memory_bus_from_url_round_trips() -> None:
    received: list[Event] = []
    async with create_bus("memory://?max_queue_size=10") as bus:
        await bus.subscribe("t", received.append, group="g")
        await bus.publish(Event("t", {"n": 1}))
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
    assert [e.payload for e in received] == [{"n": 1}]


@pytest.mark.redis
async def test_redis_bus_from_url(redis_url: str) -> None:
    prefix = f"url-{uuid.uuid4().hex[:8]}:"
    bus = create_bus(f"{redis_url}?key_prefix={prefix}&block_ms=100")
    assert bus.config.key_prefix == prefix  # type: ignore[attr-defined]
    received: list[Event] = []
    async with bus:
        await bus.subscribe("t", received.append, group="g")
        await bus.publish(Event("t", {"n": 1}))
        for _ in range(300):
            if received:
                break
            await asyncio.sleep(0.01)
    assert [e.payload for e in received] == [{"n": 1}]


@pytest.mark.kafka
@pytest.mark.timeout(60)
async def test_kafka_bus_from_url(kafka_bootstrap: str) -> None:
    topic = f"url-{uuid.uuid4().hex[:8]}"
    bus = create_bus(f"kafka://{kafka_bootstrap}?client_id=url-test&num_partitions=1&linger_ms=0")
    received: list[Event] = []
    async with bus:
        await bus.subscribe(topic, received.append, group="g")
        await bus.publish(Event(topic, {"n": 1}))
        for _ in range(3000):
            if received:
                break
            await asyncio.sleep(0.01)
    assert [e.payload for e in received] == [{"n": 1}]
