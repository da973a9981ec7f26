"""Every error says whether retrying can help, and the answer fits its cause.

Each cause is produced for real: a host name that does not resolve, a port nobody listens on,
a server that stopped answering (SIGSTOP), a server busy running a script, a server out of
memory, a command Redis rejects, a bad config. Wrong credentials are in
``tests/adapters/test_redis_auth_tls.py`` and ``tests/adapters/test_kafka_security.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import asyncio as redis_asyncio

from dotmac.events import Event, create_redis_bus
from dotmac.events.adapters.kafka import KafkaBus
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.adapters.redis import RedisStreamsBus
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.errors import (
    AuthenticationError,
    ConfigurationError,
    EventBusError,
    PublishError,
    TransportError,
)
from tests.support.kafka_server import free_port
from tests.support.redis_server import RedisServer, local_redis_server

pytestmark = pytest.mark.timeout(60)


def _redis(port: int, **options: object) -> RedisStreamsBus:
    return create_redis_bus(
        RedisConfig(
            host="127.0.0.1",
            port=port,
            publish_retries=0,
            connection_timeout=1.0,
            consumer_timeout=1.5,
            **options,  # type: ignore[arg-type]
        )
    )


async def _publish_error(bus: RedisStreamsBus | KafkaBus) -> tuple[EventBusError, float]:
    started = time.monotonic()
    try:
        with pytest.raises(EventBusError) as caught:
            await bus.publish(Event("classified", {"n": 1}))
    finally:
        await bus.close()
    return caught.value, time.monotonic() - started


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with local_redis_server("--busy-reply-threshold", "100") as running:
        yield running


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis(host="127.0.0.1", port=server.port)
    yield client
    await client.aclose()


# --- the flag itself -------------------------------------------------------------------------


def test_the_class_gives_the_default_and_one_error_may_say_otherwise() -> None:
    assert PublishError("x").retryable is True
    assert PublishError("x", retryable=False).retryable is False
    assert TransportError("x", retryable=False).retryable is False
    assert TransportError.retryable is True  # the class default is untouched
    assert AuthenticationError("x").retryable is False
    assert isinstance(AuthenticationError("x"), TransportError)
    assert str(PublishError("text", retryable=False)) == "text"


# --- Redis, one real cause each --------------------------------------------------------------


async def test_redis_unknown_host_is_not_retryable() -> None:
    bus = create_redis_bus(RedisConfig(host="no-such-host.invalid", port=6379, publish_retries=0))
    error, _ = await _publish_error(bus)
    assert isinstance(error, PublishError) and error.retryable is False
    assert "host name does not resolve" in str(error)


async def test_redis_refused_connection_is_retryable() -> None:
    error, seconds = await _publish_error(_redis(free_port()))
    assert isinstance(error, PublishError) and error.retryable is True
    assert "connection refused" in str(error)
    assert seconds < 1.0


async def test_redis_server_that_stopped_answering_times_out_retryable(
    server: RedisServer,
) -> None:
    assert server._process is not None
    bus = _redis(server.port)
    await bus.publish(Event("classified", 0))  # connected before the server stops
    os.kill(server._process.pid, signal.SIGSTOP)
    try:
        error, seconds = await _publish_error(bus)
    finally:
        os.kill(server._process.pid, signal.SIGCONT)
    assert isinstance(error, PublishError) and error.retryable is True
    assert "timed out" in str(error)
    assert seconds < 3.0


async def test_redis_busy_running_a_script_is_retryable(
    server: RedisServer, raw: redis_asyncio.Redis
) -> None:
    # A script that spins for ~2 s; past busy-reply-threshold every other command gets BUSY.
    script = (
        "local e = tonumber(redis.call('TIME')[1]) + 2 "
        "while tonumber(redis.call('TIME')[1]) < e do end"
    )
    spinning = asyncio.ensure_future(raw.eval(script, 0))
    await asyncio.sleep(0.3)
    error, _ = await _publish_error(_redis(server.port))
    await spinning
    assert isinstance(error, PublishError) and error.retryable is True
    assert "BUSY" in str(error)


async def test_redis_out_of_memory_is_retryable(
    server: RedisServer, raw: redis_asyncio.Redis
) -> None:
    await raw.config_set("maxmemory", "1")  # below what the server already uses: writes refused
    try:
        error, _ = await _publish_error(_redis(server.port))
    finally:
        await raw.config_set("maxmemory", "0")
    assert isinstance(error, PublishError) and error.retryable is True
    assert "OutOfMemoryError" in str(error)


async def test_redis_command_rejected_as_wrong_is_not_retryable(
    server: RedisServer, raw: redis_asyncio.Redis
) -> None:
    await raw.set("classified", "a string where the stream should be")
    error, _ = await _publish_error(_redis(server.port))
    assert isinstance(error, PublishError) and error.retryable is False
    assert "WRONGTYPE" in str(error)


async def test_redis_consumer_side_errors_carry_the_flag_too() -> None:
    bus = create_redis_bus(RedisConfig(host="127.0.0.1", port=free_port(), publish_retries=0))
    try:
        with pytest.raises(TransportError) as caught:
            await bus.subscribe("classified", lambda event: None, group="g")
    finally:
        await bus.close()
    assert caught.value.retryable is True and not isinstance(caught.value, PublishError)


# --- Kafka ------------------------------------------------------------------------------------


async def test_kafka_refused_connection_is_retryable() -> None:
    bus = KafkaBus(KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    error, seconds = await _publish_error(bus)
    assert isinstance(error, PublishError) and error.retryable is True
    assert seconds < 5.0


async def test_kafka_invalid_topic_name_is_not_retryable(kafka_bootstrap: str) -> None:
    bus = KafkaBus(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    try:
        with pytest.raises(PublishError) as caught:
            await bus.publish(Event("not/a/topic", 1))
    finally:
        await bus.close()
    assert caught.value.retryable is False


# --- bad config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: RedisConfig(port=70_000),
        lambda: RedisConfig(url="http://localhost"),
        lambda: KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="PLAIN"),
        lambda: KafkaConfig(bootstrap_servers="no-port"),
    ],
)
def test_bad_config_is_not_retryable(build: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()  # type: ignore[operator]
    assert caught.value.retryable is False


def test_kafka_publish_errors_say_whether_the_event_may_be_stored() -> None:
    from aiokafka import errors as kafka

    from dotmac.events.adapters.kafka.errors import translate

    refused = translate(kafka.NotLeaderForPartitionError(), "publish", publishing=True)
    timed_out = translate(kafka.RequestTimedOutError(), "publish", publishing=True)
    lost = translate(kafka.KafkaConnectionError("reset"), "publish", publishing=True)
    under_replicated = translate(
        kafka.NotEnoughReplicasAfterAppendError(), "publish", publishing=True
    )
    assert isinstance(refused, PublishError) and refused.may_have_been_written is False
    for unknown in (timed_out, lost, under_replicated):
        assert isinstance(unknown, PublishError) and unknown.may_have_been_written is True
