"""Review findings on the Redis bus, each proven against a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis_asyncio

from dotmac.events import Event, PublishError, RedisConfig, create_redis_bus

pytestmark = pytest.mark.redis


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _address(redis_url: str) -> str:
    parts = urlsplit(redis_url)
    return f"{parts.hostname}:{parts.port or 6379}"


async def test_explicit_password_wins_over_the_urls(
    redis_url: str, redis_prefix: str, raw: redis_asyncio.Redis
) -> None:
    user = f"review-{uuid.uuid4().hex[:8]}"
    await raw.acl_setuser(
        user, enabled=True, passwords=["+right-pw"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    try:
        config = RedisConfig(
            url=f"redis://{user}:stale-pw@{_address(redis_url)}/0",
            password="right-pw",
            key_prefix=redis_prefix,
        )
        bus = create_redis_bus(config)
        try:
            health = await bus.health()
            assert health.healthy, health.details
            await bus.publish(Event("acl", 1))
        finally:
            await bus.close()
    finally:
        await raw.acl_deluser(user)


async def test_ssl_flag_with_a_redis_url_speaks_tls(redis_url: str, redis_prefix: str) -> None:
    # The test server speaks plain RESP: a TLS client must fail to connect (a connection
    # error), not crash building its connection with keywords a plain connection rejects.
    config = RedisConfig(
        url=f"redis://{_address(redis_url)}/0",
        ssl=True,
        ssl_cert_reqs="none",
        ssl_check_hostname=False,
        key_prefix=redis_prefix,
        publish_retries=0,
        connection_timeout=2.0,
    )
    bus = create_redis_bus(config)
    try:
        with pytest.raises(PublishError) as caught:
            await bus.publish(Event("tls", 1))
        assert "timed out" in str(caught.value), caught.value  # no TLS handshake answer
        assert not isinstance(caught.value.__cause__, TypeError)
    finally:
        await bus.close()


def test_password_in_the_url_query_is_hidden() -> None:
    config = RedisConfig(url="redis://127.0.0.1:6379/0?password=hunter2-secret")
    assert "hunter2-secret" not in repr(config)
    assert "hunter2-secret" not in config.describe_target()
    assert "hunter2-secret" in config.secrets
