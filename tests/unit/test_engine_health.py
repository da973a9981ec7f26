"""The health report every transport makes: closed without asking, the probe's round trip,
the probe's error (secrets scrubbed) when it raises."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dotmac.events.engine.health import probe_health, scrub


async def test_a_probe_that_returns_is_healthy_with_what_it_found() -> None:
    async def probe(details: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        details["streams"] = 3

    status = await probe_health(
        probe, adapter="nats", closed=False, details={"target": "h:4222"}, secrets=()
    )
    assert status.healthy and status.adapter == "nats"
    assert status.details == {"target": "h:4222", "streams": 3}
    assert 5 <= status.latency_ms < 5_000


async def test_a_closed_bus_is_unhealthy_without_asking() -> None:
    asked: list[dict[str, Any]] = []

    async def probe(details: dict[str, Any]) -> None:
        asked.append(details)

    status = await probe_health(
        probe, adapter="redis", closed=True, details={"target": "h:6379"}, secrets=()
    )
    assert asked == []
    assert not status.healthy and status.latency_ms == 0.0
    assert status.details == {"target": "h:6379", "error": "bus is closed"}


async def test_a_failing_probe_keeps_what_it_found_and_its_error_without_secrets() -> None:
    async def probe(details: dict[str, Any]) -> None:
        details["server_version"] = "2.10"
        raise ConnectionError("refused for redis://u:hunter2@h:6379 (token tok-9)")

    status = await probe_health(
        probe, adapter="redis", closed=False, details={}, secrets=("hunter2", "", "tok-9")
    )
    assert not status.healthy and status.latency_ms >= 0
    assert status.details == {
        "server_version": "2.10",
        "error": "ConnectionError: refused for redis://u:***@h:6379 (token ***)",
    }


async def test_cancelling_the_check_is_not_reported_as_unhealthy() -> None:
    async def probe(details: dict[str, Any]) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await probe_health(probe, adapter="kafka", closed=False, details={}, secrets=())


def test_scrub_replaces_every_secret_and_ignores_empty_ones() -> None:
    assert scrub("a pw b pw c tk", ("pw", "", "tk")) == "a *** b *** c ***"
    assert scrub("nothing here", ()) == "nothing here"
