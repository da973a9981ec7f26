"""Conformance tests for reading the log back: ``read``, ``read_records`` and ``replay``.

Part of :class:`~dotmac.events.testing.ConformanceSuite`; a transport that cannot read its log
sets ``Capabilities(read_log=False)`` and must then raise UnsupportedOperation.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from dotmac.events.bus import EventBus
from dotmac.events.errors import (
    BusClosedError,
    ConfigurationError,
    DecodeError,
    UnsupportedOperation,
)
from dotmac.events.event import Event
from dotmac.events.testing.support import BusFactory, Capabilities, PoisonCodec, wait_until

__all__ = ["ReadingConformance"]


def _topic(name: str) -> str:
    return f"reading.{name}.{uuid.uuid4().hex[:10]}"


class ReadingConformance:
    """Reading by time, position and limit; following; replay; groups left untouched."""

    capabilities: ClassVar[Capabilities]

    def _reads(self, bus: EventBus, topic: str) -> bool:
        """Whether the transport reads its log; if not, that it says so with a typed error."""
        if self.capabilities.read_log:
            return True
        with pytest.raises(UnsupportedOperation):
            bus.read(topic)
        return False

    async def _publish_two_batches(self, bus: EventBus, topic: str) -> datetime:
        """Events 0-2, then 3-5 (one key: one partition, in order); returns a moment between."""
        for n in range(3):
            await bus.publish(Event(topic, {"n": n}, key="k"))
        await asyncio.sleep(0.05)
        middle = datetime.now(UTC)
        await asyncio.sleep(0.05)
        for n in range(3, 6):
            await bus.publish(Event(topic, {"n": n}, key="k"))
        return middle

    async def test_read_by_time_position_and_limit(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("read")
        if not self._reads(bus, topic):
            return
        middle = await self._publish_two_batches(bus, topic)
        records = [r async for r in bus.read_records(topic)]
        assert [r.event.payload["n"] for r in records if r.event] == list(range(6))
        assert all(r.error is None and r.key == "k" and r.timestamp for r in records)
        positions = [r.position for r in records]
        assert len(set(positions)) == 6

        async def numbers(**bounds: Any) -> list[int]:
            return [e.payload["n"] async for e in bus.read(topic, **bounds)]

        assert await numbers(since=middle) == [3, 4, 5]
        assert await numbers(until=middle) == [0, 1, 2]
        assert await numbers(since=positions[1]) == [2, 3, 4, 5]
        assert await numbers(since=positions[1], limit=2) == [2, 3]
        assert await numbers(until=positions[3]) == [0, 1, 2, 3]
        assert await numbers(since=positions[1], until=positions[4]) == [2, 3, 4]
        event = records[2].event
        assert event is not None and event.delivery is not None
        assert event.delivery.message_id == positions[2] and event.delivery.count == 0

    async def test_replay_in_order_and_stop_at_handler_error(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("replay")
        if not self._reads(bus, topic):
            return
        middle = await self._publish_two_batches(bus, topic)
        seen: list[int] = []

        def project(event: Event) -> None:  # a plain def runs in a worker thread
            seen.append(event.payload["n"])

        assert await bus.replay(topic, project) == 6
        assert seen == list(range(6))
        seen.clear()
        assert await bus.replay(topic, project, since=middle, limit=2) == 2
        assert seen == [3, 4]

        async def fails_at_two(event: Event) -> None:
            if event.payload["n"] == 2:
                raise RuntimeError("projection broke")
            seen.append(event.payload["n"])

        seen.clear()
        with pytest.raises(RuntimeError, match="projection broke"):
            await bus.replay(topic, fails_at_two)
        assert seen == [0, 1]

    async def test_read_follow_gets_events_published_later(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("follow")
        if not self._reads(bus, topic):
            return
        await bus.publish_many([Event(topic, n, key="k") for n in range(2)])
        everything: list[int] = []
        only_new: list[str] = []

        async def follow_all() -> None:
            async for event in bus.read(topic, follow=True, limit=4):
                everything.append(event.payload)  # noqa: PERF401 - watched as it grows

        async def follow_from_end() -> None:
            async for event in bus.read(topic, since="end", follow=True, limit=1):
                only_new.append(event.payload)  # noqa: PERF401 - watched as it grows

        reading = asyncio.create_task(follow_all())
        await wait_until(lambda: len(everything) >= 2, self.capabilities.timeout, "the held two")
        for n in (2, 3):
            await bus.publish(Event(topic, n, key="k"))
        await asyncio.wait_for(reading, self.capabilities.timeout)
        assert everything == [0, 1, 2, 3]
        from_end = asyncio.create_task(follow_from_end())
        n = 0
        while not only_new:  # "end" is taken when the read starts: publish until it has begun
            await bus.publish(Event(topic, f"late-{n}", key="k"))
            n += 1
            await asyncio.sleep(0.2)
            assert n < 5 * self.capabilities.timeout, "a follower from the end saw nothing"
        await asyncio.wait_for(from_end, self.capabilities.timeout)
        assert only_new[0].startswith("late-"), only_new

    async def test_reading_leaves_consumer_groups_untouched(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("readgroups")
        if not self._reads(bus, topic):
            return
        handled: list[int] = []

        async def handler(event: Event) -> None:
            handled.append(event.payload)

        first = await bus.subscribe(topic, handler, group="g")
        await bus.publish_many([Event(topic, n, key="k") for n in range(3)])
        await wait_until(lambda: len(handled) >= 3, self.capabilities.timeout, "3 handled")
        await first.close()
        await bus.publish_many([Event(topic, n, key="k") for n in range(3, 6)])
        held = [e.payload async for e in bus.read(topic)]  # the memory bus trims what g acked
        assert held[-3:] == [3, 4, 5]
        assert await bus.replay(topic, lambda event: None) == len(held)
        fresh: list[int] = []

        async def keep(event: Event) -> None:
            fresh.append(event.payload)

        await bus.subscribe(topic, keep, group="fresh")  # before g acks: memory trims acked
        handled.clear()
        await bus.subscribe(topic, handler, group="g")
        await wait_until(lambda: len(handled) >= 3, self.capabilities.timeout, "what g missed")
        await wait_until(lambda: len(fresh) >= len(held), self.capabilities.timeout, "fresh")
        await asyncio.sleep(0.3)
        assert handled == [3, 4, 5], "a read moved or acked the group's position"
        assert fresh == held

    async def test_read_shows_undecodable_records(self, new_bus: BusFactory) -> None:
        writer, reader = await new_bus(), await new_bus(codec=PoisonCodec())
        topic = _topic("readpoison")
        if not self._reads(reader, topic):
            return
        for payload in ({"n": 1}, {"poison": True}, {"n": 2}):
            await writer.publish(Event(topic, payload, key="same"))
        records = [r async for r in reader.read_records(topic)]
        assert [r.event is None for r in records] == [False, True, False]
        bad = records[1]
        assert isinstance(bad.error, DecodeError) and "poison" in str(bad.error)
        assert b"poison" in bad.data
        got: list[Any] = []
        with pytest.raises(DecodeError, match=re.escape(bad.position)):
            async for event in reader.read(topic):
                got.append(event.payload)  # noqa: PERF401 - kept up to the error
        assert got == [{"n": 1}]
        assert [e.payload async for e in reader.read(topic, since=bad.position)] == [{"n": 2}]

    async def test_read_refuses_bad_arguments(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("readargs")
        if not self._reads(bus, topic):
            return
        now = datetime.now(UTC)
        for bounds, field_name in (
            ({"since": datetime(2026, 1, 1)}, "since"),
            ({"until": now, "since": now}, "until"),
            ({"limit": 0}, "limit"),
            ({"since": 12}, "since"),
        ):
            with pytest.raises(ConfigurationError) as caught:
                bus.read(topic, **bounds)
            assert caught.value.field == field_name
        with pytest.raises(ConfigurationError) as caught:
            async for _ in bus.read(topic, since="not a position"):
                pass
        assert caught.value.field == "since"
        await bus.close()
        with pytest.raises(BusClosedError):
            bus.read(topic)
