"""Conformance tests for pattern subscriptions (``user.*``, ``user.**``) and topic lists.

Part of :class:`~dotmac.events.testing.ConformanceSuite`; a transport that cannot list its
topics sets ``Capabilities(patterns=False)`` and must then refuse a pattern with
UnsupportedOperation instead of silently following nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import ClassVar

import pytest

from dotmac.events.consumer import ConsumerOptions, run_consumer
from dotmac.events.errors import ConfigurationError, UnsupportedOperation
from dotmac.events.event import Event
from dotmac.events.testing.support import BusFactory, Capabilities, wait_until

__all__ = ["PatternConformance"]


def _root() -> str:
    return f"pat{uuid.uuid4().hex[:10]}"


class PatternConformance:
    """Pattern subscriptions: matching, topics that appear later, dead letters, bad patterns."""

    capabilities: ClassVar[Capabilities]

    async def test_pattern_follows_existing_and_new_topics(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        root = _root()
        seen: list[tuple[str, int]] = []

        async def handler(event: Event) -> None:
            seen.append((event.topic, event.payload["n"]))

        await bus.publish(Event(f"{root}.old", {"n": 0}))  # exists before the subscription
        if not self.capabilities.patterns:
            with pytest.raises(UnsupportedOperation):
                await bus.subscribe(f"{root}.*", handler, group="g")
            return
        subscription = await bus.subscribe(f"{root}.*", handler, group="g")
        await bus.publish(Event(f"{root}.created", {"n": 1}))  # a topic that appears later
        await bus.publish(Event(f"{root}.eu.created", {"n": 2}))  # two segments: not `*`
        await bus.publish(Event(f"other{root}.created", {"n": 3}))
        await wait_until(lambda: len(seen) >= 2, self.capabilities.timeout, "2 matching events")
        await bus.publish(Event(f"{root}.created", {"n": 4}))  # the joined topic goes on
        await wait_until(lambda: len(seen) >= 3, self.capabilities.timeout, "the next event")
        await asyncio.sleep(0.3)
        assert sorted(seen) == [(f"{root}.created", 1), (f"{root}.created", 4), (f"{root}.old", 0)]
        assert sorted(getattr(subscription, "topics", [])) == [f"{root}.created", f"{root}.old"]
        await subscription.close()
        assert subscription.closed

    async def test_double_star_matches_any_depth_but_never_dead_letters(
        self, new_bus: BusFactory
    ) -> None:
        if not self.capabilities.patterns:
            return  # the refusal is tested above
        bus = await new_bus()
        root = _root()
        seen: list[str] = []
        options = ConsumerOptions(max_retries=0)

        async def handler(event: Event) -> None:
            seen.append(event.topic)
            if event.payload.get("fail"):
                raise ValueError("cannot handle this one")

        await run_consumer(bus, f"{root}.**", handler, options, group="g")
        for topic in (root, f"{root}.a", f"{root}.a.b.c"):
            await bus.publish(Event(topic, {}))
        await bus.publish(Event(f"{root}.bad", {"fail": True}))
        await wait_until(lambda: len(seen) >= 4, self.capabilities.timeout, "4 events")
        dead: list[Event] = []

        async def keep(event: Event) -> None:
            dead.append(event)

        await bus.subscribe(f"{root}.bad.DLQ", keep, group="dlq-reader")
        await wait_until(lambda: bool(dead), self.capabilities.timeout, "the dead letter")
        await asyncio.sleep(0.5)
        # The dead letter went to the concrete topic's DLQ and the `**` pattern left it alone.
        assert sorted(seen) == sorted([root, f"{root}.a", f"{root}.a.b.c", f"{root}.bad"])

    async def test_private_pattern_subscription_gets_a_new_topic_from_its_first_event(
        self, new_bus: BusFactory
    ) -> None:
        if not self.capabilities.patterns:
            return
        bus = await new_bus()
        publisher = await new_bus()  # another process creates the topic
        root = _root()
        seen: list[int] = []

        async def handler(event: Event) -> None:
            seen.append(event.payload["n"])

        await bus.subscribe(f"{root}.*.done", handler)
        for n in range(5):
            await publisher.publish(Event(f"{root}.job.done", {"n": n}, key="k"))
        await wait_until(lambda: len(seen) >= 5, self.capabilities.timeout, "5 events")
        assert seen == [0, 1, 2, 3, 4]

    async def test_bad_patterns_are_refused(self, new_bus: BusFactory) -> None:
        bus = await new_bus()

        async def handler(event: Event) -> None:
            return None

        for bad in ("user*", "user.*x", "user..*", ".*"):
            with pytest.raises(ConfigurationError, match="topic"):
                await bus.subscribe(bad, handler, group="g")
