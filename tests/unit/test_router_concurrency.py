"""``EventRouter.start(bus, concurrency=N)``: one setting for every route, as the worker's
``--concurrency`` passes it; a bad value is refused before any hook runs or anything subscribes."""

from __future__ import annotations

import asyncio

import pytest

from dotmac.events import ConfigurationError, Event, EventRouter
from dotmac.events.adapters.memory import create_memory_bus


async def _peak_running(concurrency: int | None) -> int:
    """Most handler calls running at once, for a route declared with concurrency 2."""
    router = EventRouter()
    running = peak = 0
    release = asyncio.Event()

    @router.handler("jobs", group="g", concurrency=2)
    async def handle(event: Event) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    bus = create_memory_bus()
    await router.start(bus, concurrency=concurrency)
    try:
        await bus.publish_many([Event("jobs", {"n": n}, key=f"k{n}") for n in range(12)])
        for _ in range(100):  # let every call that may start do so
            await asyncio.sleep(0.005)
        return peak
    finally:
        release.set()
        await router.stop(timeout=5)
        await bus.close()


async def test_the_routes_own_concurrency_applies_by_default() -> None:
    assert await _peak_running(None) == 2


async def test_concurrency_overrides_every_route() -> None:
    assert await _peak_running(5) == 5
    assert await _peak_running(1) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
async def test_a_bad_concurrency_is_refused_before_anything_starts(bad: object) -> None:
    router = EventRouter()
    hooks: list[str] = []
    router.on_startup(lambda: hooks.append("started"))

    @router.handler("jobs", group="g")
    async def handle(event: Event) -> None: ...

    bus = create_memory_bus()
    with pytest.raises(ConfigurationError, match="concurrency"):
        await router.start(bus, concurrency=bad)  # type: ignore[arg-type]
    assert hooks == [] and router.bus is None and router.subscriptions == []
    await bus.close()
