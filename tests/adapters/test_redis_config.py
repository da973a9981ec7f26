"""RedisConfig validation, the factory, and secrets kept out of repr, errors and health."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import (
    AuthenticationError,
    ConfigurationError,
    Event,
    RedisConfig,
    RedisStreamsBus,
    TransportError,
    create_redis_bus,
)
from dotmac.events.adapters import create_redis_bus as lazy_create_redis_bus
from tests.support.redis_server import local_redis_server

pytestmark = pytest.mark.redis

SECRET = "s3cret-Pa55word"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "http://localhost"}, "url"),
        ({"url": ""}, "url"),
        ({"url": "redis://localhost", "host": "other"}, "url"),
        ({"url": "unix:///tmp/redis.sock", "ssl": True}, "ssl"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "6379"}, "port"),
        ({"db": -1}, "db"),
        ({"host": ""}, "host"),
        ({"password": 123}, "password"),
        ({"ssl_cert_reqs": "sometimes"}, "ssl_cert_reqs"),
        ({"max_stream_length": 0}, "max_stream_length"),
        ({"prefetch_count": 0}, "prefetch_count"),
        ({"block_ms": 0}, "block_ms"),
        ({"block_ms": 5000, "consumer_timeout": 5.0}, "consumer_timeout"),
        ({"consumer_timeout": -1}, "consumer_timeout"),
        ({"connection_timeout": 0}, "connection_timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"claim_idle_ms": 0}, "claim_idle_ms"),
        ({"claim_idle_ms": 1000, "claim_interval": 0.6}, "claim_interval"),
        ({"claim_interval": 0}, "claim_interval"),
        ({"idle_consumer_ms": 0}, "idle_consumer_ms"),
        ({"new_group_start": "middle"}, "new_group_start"),
        ({"consumer_name": ""}, "consumer_name"),
        ({"close_timeout": 0}, "close_timeout"),
        ({"reconnect_backoff_base_ms": -1}, "reconnect_backoff_base_ms"),
        (
            {"reconnect_backoff_base_ms": 100, "reconnect_backoff_max_ms": 10},
            "reconnect_backoff_max_ms",
        ),
        ({"publish_retries": -1}, "publish_retries"),
        ({"key_prefix": None}, "key_prefix"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_seed_readme_configs_are_valid() -> None:
    RedisConfig(host="localhost", port=6379, db=0)
    config = RedisConfig(
        url="redis://localhost:6379/0",
        max_stream_length=10000,
        consumer_timeout=5.0,
        prefetch_count=10,
    )
    assert config.describe_target() == "redis://localhost:6379/0"


def test_factory_rejects_wrong_types() -> None:
    with pytest.raises(ConfigurationError) as info:
        create_redis_bus({"url": "redis://x"})  # type: ignore[arg-type]
    assert info.value.field == "config"
    with pytest.raises(ConfigurationError) as info:
        create_redis_bus(client=object())  # type: ignore[arg-type]
    assert info.value.field == "client"


def test_password_never_in_repr_or_str() -> None:
    config = RedisConfig(url=f"redis://app:{SECRET}@localhost:6379/0", password=SECRET)
    for text in (repr(config), str(config), config.describe_target()):
        assert SECRET not in text
    assert "app:***@localhost" in repr(config)
    with pytest.raises(ConfigurationError) as info:
        RedisConfig(password=123)  # type: ignore[arg-type]
    assert "123" not in str(info.value)


def test_import_does_not_load_redis() -> None:
    code = (
        "import sys, dotmac.events as e; e.RedisConfig(port=1); "
        "assert 'redis' not in sys.modules, 'redis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_lazy_factory_and_ready_client(redis_url: str, redis_prefix: str) -> None:
    client = redis_asyncio.Redis.from_url(redis_url)
    bus = lazy_create_redis_bus(RedisConfig(key_prefix=redis_prefix), client=client)
    assert isinstance(bus, RedisStreamsBus)
    await bus.publish(Event("shared", {"n": 1}))
    await bus.close()
    # The bus never closes a client it was given.
    assert await client.xlen(f"{redis_prefix}shared") == 1
    await client.aclose()


async def test_wrong_password_errors_hide_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with local_redis_server("--requirepass", "right-one") as server:
        good = create_redis_bus(RedisConfig(url=server.url, password="right-one"))
        await good.publish(Event("t", 1))
        assert (await good.health()).healthy
        await good.close()

        url = f"redis://default:{SECRET}@127.0.0.1:{server.port}/0"
        bus = create_redis_bus(RedisConfig(url=url, publish_retries=0))
        with pytest.raises(AuthenticationError) as info:
            await bus.publish(Event("t", 1))
        assert SECRET not in str(info.value) and not info.value.retryable
        health = await bus.health()
        assert not health.healthy and SECRET not in str(health)
        with pytest.raises(TransportError) as stats_info:
            await bus.stats("t", "g")
        assert SECRET not in str(stats_info.value)
        with pytest.raises(TransportError):
            await bus.subscribe("t", _noop, group="g")
        await bus.close()
    assert SECRET not in caplog.text


async def _noop(event: Event) -> None:
    return None
