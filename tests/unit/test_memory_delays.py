"""The memory bus's delayed events and its clock: ``advance`` releases what became due."""

from __future__ import annotations

import asyncio

import pytest

from dotmac.events import Event, create_memory_bus
from dotmac.events.errors import ConfigurationError
from dotmac.events.testing import wait_until


async def test_advance_releases_due_events_in_due_order_without_waiting() -> None:
    async with create_memory_bus() as bus:
        seen: list[str] = []

        async def handler(event: Event) -> None:
            seen.append(event.payload["name"])

        await bus.subscribe("reminders", handler, group="g")
        await bus.publish(Event("reminders", {"name": "in an hour"}), delay=3600)
        await bus.publish(Event("reminders", {"name": "in a day"}), delay=86_400)
        await bus.publish(Event("reminders", {"name": "in a minute"}), delay=60)
        assert bus.delayed == 3
        assert await bus.advance(59) == 0
        assert await bus.advance(3541) == 2  # one hour in: the minute and the hour are due
        await asyncio.sleep(0.05)
        assert seen == ["in a minute", "in an hour"]
        assert bus.delayed == 1


async def test_a_client_shares_the_clock_and_the_held_events() -> None:
    async with create_memory_bus() as broker:
        client = broker.client()
        seen: list[int] = []
        await broker.subscribe("t", lambda event: seen.append(event.payload["n"]), group="g")
        await client.publish(Event("t", {"n": 1}), delay=10)
        assert broker.delayed == 1
        await broker.advance(10)
        await asyncio.sleep(0.05)
        assert seen == [1]
        await client.close()


async def test_short_delays_need_no_advance() -> None:
    async with create_memory_bus() as bus:
        seen: list[float] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bus.subscribe("t", lambda event: seen.append(loop.time() - started), group="g")
        await bus.publish(Event("t", {}), delay=0.2)
        await wait_until(lambda: bool(seen), 5.0, "the delayed event")
        assert seen[0] >= 0.19


async def test_the_clock_only_moves_forward() -> None:
    async with create_memory_bus() as bus:
        with pytest.raises(ConfigurationError, match="seconds"):
            await bus.advance(-1)
