"""Conformance tests for delayed delivery and non-blocking retries.

Part of :class:`~dotmac.events.testing.ConformanceSuite`; a transport that cannot hold events
until they are due sets ``Capabilities(delays=False)`` and must then refuse ``delay=`` with
UnsupportedOperation, never deliver early or drop the event.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from dotmac.events.consumer import ConsumerOptions, run_consumer
from dotmac.events.errors import ConfigurationError, UnsupportedOperation
from dotmac.events.event import Event
from dotmac.events.testing.support import BusFactory, Capabilities, wait_until

__all__ = ["DelayConformance"]

EARLY_TOLERANCE = 0.02
"""Seconds an arrival may precede its due time and still count as on time: clocks of the
broker and this process are read at different moments."""


def _topic(name: str) -> str:
    return f"delays.{name}.{uuid.uuid4().hex[:10]}"


class DelayConformance:
    """``publish(delay=..., at=...)`` and ``ConsumerOptions(retry_mode="reschedule")``."""

    capabilities: ClassVar[Capabilities]

    async def test_delayed_events_arrive_when_due_not_before(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("due")
        arrived: dict[str, tuple[float, Event]] = {}

        async def handler(event: Event) -> None:
            arrived[event.payload["name"]] = (time.time(), event)

        await bus.subscribe(topic, handler, group="g")
        if not self.capabilities.delays:
            with pytest.raises(UnsupportedOperation):
                await bus.publish(Event(topic, {"name": "late"}), delay=1)
            return
        started = time.time()
        due = {"now": started, "half": started + 0.5, "later": started + 1.5, "at": started + 1.0}
        await bus.publish(Event(topic, {"name": "later"}, key="k", headers={"h": "1"}), delay=1.5)
        await bus.publish(Event(topic, {"name": "half"}), delay=timedelta(seconds=0.5))
        when = datetime.fromtimestamp(due["at"], UTC)
        await bus.publish(Event(topic, {"name": "at"}), at=when)
        await bus.publish(Event(topic, {"name": "now"}))
        await wait_until(lambda: len(arrived) == 4, self.capabilities.timeout, "4 events")
        for name, (at, _) in arrived.items():
            assert at >= due[name] - EARLY_TOLERANCE, f"{name} arrived {due[name] - at:.3f}s early"
        later = arrived["later"][1]
        assert later.key == "k" and later.headers["h"] == "1" and later.topic == topic
        assert sorted(arrived, key=lambda n: arrived[n][0]) == ["now", "half", "at", "later"]

    async def test_bad_delays_are_refused(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        event = Event(_topic("bad"), {})
        naive = datetime.now() + timedelta(seconds=5)  # no time zone: the case under test
        for kwargs in ({"delay": -1}, {"delay": 1, "at": datetime.now(UTC)}, {"at": naive}):
            with pytest.raises(ConfigurationError):
                await bus.publish(event, **kwargs)

    async def test_non_blocking_retries_let_the_stream_flow(self, new_bus: BusFactory) -> None:
        if not self.capabilities.delays:
            return  # the refusal is tested above
        bus = await new_bus()
        topic = _topic("resched")
        backoff = 1.5
        options = ConsumerOptions(
            max_retries=2, backoff_base_ms=backoff * 1000, jitter=False, retry_mode="reschedule"
        )
        attempts: dict[int, list[int]] = {}
        good: list[float] = []

        async def handler(event: Event) -> None:
            assert event.delivery is not None
            if event.payload.get("poison") is not None:
                attempts.setdefault(event.payload["poison"], []).append(event.delivery.count)
                raise RuntimeError("cannot handle this one")
            good.append(time.time() - event.payload["sent"])

        await run_consumer(bus, topic, handler, options, group="g")
        dead: list[Event] = []

        async def keep(event: Event) -> None:
            dead.append(event)

        await bus.subscribe(f"{topic}.DLQ", keep, group="dlq")
        poison, flowing = 10, 1_000
        for n in range(poison):  # poison at the head of the stream, one consumer, one lane
            await bus.publish(Event(topic, {"poison": n}, key="same"))
        for _ in range(flowing):
            await bus.publish(Event(topic, {"sent": time.time()}, key="same"))
        await wait_until(
            lambda: len(good) == flowing, self.capabilities.timeout, f"{flowing} good events"
        )
        # The good events' latency does not include a poison message's backoff.
        p99 = sorted(good)[int(0.99 * len(good)) - 1]
        assert p99 < backoff, f"p99 of the good events {p99:.3f}s includes the backoff"
        print(f"\n{bus.adapter}: {poison} poison ahead of {flowing} good: good p99 {p99:.4f}s")
        # The retry waits in the broker, in the group's own retry topic.
        assert f"_retry.g.{topic}" in await bus.topics("_retry.**")
        await wait_until(
            lambda: len(dead) == poison,
            3 * backoff + self.capabilities.timeout,
            f"{poison} dead letters",
        )
        assert all(counts == [1, 2, 3] for counts in attempts.values()), attempts
        assert sorted(attempts) == list(range(poison))

    async def test_reschedule_needs_a_named_group(self, new_bus: BusFactory) -> None:
        bus = await new_bus()

        async def handler(event: Event) -> None:
            return None

        with pytest.raises(ConfigurationError, match="retry_mode"):
            await run_consumer(
                bus, _topic("private"), handler, ConsumerOptions(retry_mode="reschedule")
            )
