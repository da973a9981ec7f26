"""HealthChecker: background checks, the last status, timeouts, on_change."""

from __future__ import annotations

import asyncio

import pytest

from dotmac.events import ConfigurationError, HealthChecker, HealthStatus, MemoryBus
from tests.support.observability import eventually


class FlakyHealthBus(MemoryBus):
    """A memory bus whose health check can be made to hang or raise."""

    mode = "ok"

    async def health(self) -> HealthStatus:
        if self.mode == "hang":
            await asyncio.sleep(60)
        if self.mode == "raise":
            raise OSError("connection refused")
        return await super().health()


async def test_tracks_the_bus_and_reports_changes() -> None:
    bus = MemoryBus()
    changes: list[bool] = []
    async with HealthChecker(
        bus, check_interval=0.02, timeout=1, on_change=lambda s: changes.append(s.healthy)
    ) as checker:
        assert checker.healthy and checker.status is not None
        assert checker.status.adapter == "memory"
        assert checker.age is not None and checker.age < 1
        await bus.close()
        await eventually(lambda: not checker.healthy)
        assert checker.running
    assert not checker.running
    assert changes == [True, False]
    await checker.stop()  # idempotent


@pytest.mark.parametrize("mode", ["hang", "raise"])
async def test_hung_or_raising_health_is_unhealthy(mode: str) -> None:
    bus = FlakyHealthBus()
    checker = HealthChecker(bus, check_interval=10, timeout=0.1)
    assert (await checker.check()).healthy
    bus.mode = mode
    status = await checker.check()
    assert not status.healthy and not checker.healthy
    assert status.latency_ms < 1000
    assert ("0.1s" if mode == "hang" else "connection refused") in status.details["error"]
    bus.mode = "ok"
    assert (await checker.check()).healthy
    await bus.close()


async def test_async_on_change_and_failing_callback_does_not_stop_checks() -> None:
    bus = FlakyHealthBus()
    seen: list[bool] = []

    async def record(status: HealthStatus) -> None:
        seen.append(status.healthy)
        raise RuntimeError("alerting is down")

    checker = HealthChecker(bus, check_interval=0.01, timeout=0.5, on_change=record)
    await checker.start()
    await checker.start()  # already running: no second task
    bus.mode = "raise"
    await eventually(lambda: not checker.healthy)
    await checker.stop()
    assert seen == [True, False]
    await bus.close()


def test_validation() -> None:
    bus = MemoryBus()
    with pytest.raises(ConfigurationError, match="check_interval"):
        HealthChecker(bus, check_interval=0)
    with pytest.raises(ConfigurationError, match="timeout"):
        HealthChecker(bus, timeout=-1)
    checker = HealthChecker(bus)
    assert checker.status is None and not checker.healthy and checker.age is None
