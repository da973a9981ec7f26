"""NATS health on a real server: what it reports while up, closed, and with the server gone
(the password in the servers URL never shows)."""

from __future__ import annotations

import nats
import pytest

from dotmac.events import NatsConfig, create_nats_bus
from dotmac.events.testing import wait_until
from tests.support.nats_server import NatsServer, find_nats_server

pytestmark = pytest.mark.nats


async def test_health_reports_the_target_streams_and_server_version(
    nats_url: str, nats_prefixes: tuple[str, str]
) -> None:
    config = NatsConfig(
        servers=nats_url, stream_prefix=nats_prefixes[0], subject_prefix=nats_prefixes[1]
    )
    bus = create_nats_bus(config)
    try:
        health = await bus.health()
        assert health.healthy and health.adapter == "nats" and health.latency_ms > 0
        assert set(health.details) == {"target", "streams", "server_version"}
        assert health.details["target"] == config.describe_target()
        assert isinstance(health.details["streams"], int)
    finally:
        await bus.close()
    closed = await bus.health()
    assert not closed.healthy and closed.latency_ms == 0.0
    assert closed.details == {"target": config.describe_target(), "error": "bus is closed"}


async def test_a_shared_client_is_not_described(
    nats_url: str, nats_prefixes: tuple[str, str]
) -> None:
    client = await nats.connect(nats_url)
    config = NatsConfig(stream_prefix=nats_prefixes[0], subject_prefix=nats_prefixes[1])
    bus = create_nats_bus(config, client=client)
    try:
        health = await bus.health()
        assert health.healthy and health.details["target"] == "shared client"
    finally:
        await bus.close()
        await client.close()


async def test_a_server_gone_is_unhealthy_and_the_password_stays_hidden() -> None:
    binary = find_nats_server()
    assert binary is not None, "no nats-server (see tests/support/nats_server.py)"
    with NatsServer(binary) as server:
        config = NatsConfig(
            servers=f"nats://app:pw-hidden-7@127.0.0.1:{server.port}",
            publish_timeout=1.0,
            reconnect_wait=0.2,
        )
        bus = create_nats_bus(config)
        try:
            assert (await bus.health()).healthy
            server.stop()
            health = await bus.health()
            assert not health.healthy and health.details["error"]
            assert "pw-hidden-7" not in repr(health)
            assert health.details["target"] == f"nats://app:***@127.0.0.1:{server.port}"
            server.start()

            async def healthy_again() -> bool:
                return (await bus.health()).healthy

            await wait_until(healthy_again, timeout=15, message="healthy after the restart")
        finally:
            await bus.close(timeout=2.0)
