"""HealthChecker: checks a bus in the background and holds the last result.

A readiness endpoint then answers from memory (``checker.status``) instead of making a broker
round trip per probe, and a hung broker shows up as unhealthy after ``timeout`` seconds rather
than hanging the probe.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from dotmac.events.bus import EventBus, HealthStatus
from dotmac.events.errors import ConfigurationError

__all__ = ["HealthChecker"]

logger = logging.getLogger("dotmac.events.health")

HealthCallback = Callable[[HealthStatus], Awaitable[None] | None]


class HealthChecker:
    """Runs ``bus.health()`` every ``check_interval`` seconds, each bounded by ``timeout``.

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`. ``on_change``
    (sync or async) is called with the new status whenever healthy flips, and on the first check.
    """

    def __init__(
        self,
        bus: EventBus,
        check_interval: float = 30.0,
        timeout: float = 5.0,
        *,
        on_change: HealthCallback | None = None,
    ) -> None:
        if check_interval <= 0:
            raise ConfigurationError(
                "check_interval", f"must be > 0 seconds, got {check_interval!r}"
            )
        if timeout <= 0:
            raise ConfigurationError("timeout", f"must be > 0 seconds, got {timeout!r}")
        self.bus = bus
        self.check_interval = check_interval
        self.timeout = timeout
        self.on_change = on_change
        self._status: HealthStatus | None = None
        self._checked_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> HealthStatus | None:
        """The last result, or None before the first check finished."""
        return self._status

    @property
    def healthy(self) -> bool:
        """True when the last check passed (False before any check)."""
        return self._status is not None and self._status.healthy

    @property
    def age(self) -> float | None:
        """Seconds since the last check finished."""
        return None if self._checked_at is None else time.monotonic() - self._checked_at

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def check(self) -> HealthStatus:
        """Check once now, store and return the result. Never raises (but can be cancelled)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                status = await self.bus.health()
        except TimeoutError:
            status = self._failed(started, f"no answer within {self.timeout}s")
        except Exception as exc:  # health() should not raise; a buggy transport still must not
            status = self._failed(started, repr(exc))
        previous, self._status = self._status, status
        self._checked_at = time.monotonic()
        if previous is None or previous.healthy != status.healthy:
            await self._changed(status)
        return status

    def _failed(self, started: float, error: str) -> HealthStatus:
        return HealthStatus(
            healthy=False,
            adapter=self.bus.adapter,
            latency_ms=(time.perf_counter() - started) * 1000,
            details={"error": error},
        )

    async def _changed(self, status: HealthStatus) -> None:
        level = logging.INFO if status.healthy else logging.WARNING
        logger.log(
            level,
            "%s bus is %s: %s",
            status.adapter,
            "healthy" if status.healthy else "unhealthy",
            status.details,
        )
        if self.on_change is None:
            return
        try:
            result = self.on_change(status)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("health on_change callback failed")

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.check_interval)

    async def start(self) -> None:
        """Start checking in the background; the first check is done before this returns."""
        if self.running:
            return
        await self.check()
        self._task = asyncio.create_task(self._run_after_first(), name="dotmac-health-checker")

    async def _run_after_first(self) -> None:
        await asyncio.sleep(self.check_interval)
        await self._run()

    async def stop(self) -> None:
        """Stop the background checks. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
