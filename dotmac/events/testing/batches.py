"""Conformance tests for batch handlers (``subscribe_batch``).

Part of :class:`~dotmac.events.testing.ConformanceSuite`: batches arrive in order and are acked
together, a partial failure retries only the events it names, any other failure retries the
batch and then dead-letters each event, and undecodable events never reach the handler.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import ClassVar

from dotmac.events.consumer import ConsumerOptions
from dotmac.events.dlq import DLQEntry, create_dlq_consumer
from dotmac.events.errors import BatchFailed
from dotmac.events.event import Event
from dotmac.events.testing.support import BusFactory, Capabilities, PoisonCodec, wait_until

__all__ = ["BatchConformance"]


def _topic(name: str) -> str:
    return f"batches.{name}.{uuid.uuid4().hex[:10]}"


FAST = ConsumerOptions(max_retries=1, backoff_base_ms=10, jitter=False)


class BatchConformance:
    """``subscribe_batch``: sizes, order, acks, partial and whole failures, dead letters."""

    capabilities: ClassVar[Capabilities]

    async def test_batches_arrive_in_order_and_are_acked_together(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus()
        topic = _topic("order")
        sizes: list[int] = []
        seen: list[int] = []

        async def handler(events: list[Event]) -> None:
            sizes.append(len(events))
            seen.extend(event.payload["n"] for event in events)

        await bus.publish_many([Event(topic, {"n": n}, key="one") for n in range(250)])
        await bus.subscribe_batch(topic, handler, group="g", max_batch_size=100, max_wait_ms=50)
        await wait_until(lambda: len(seen) >= 250, self.capabilities.timeout, "250 events")
        await asyncio.sleep(1.5)  # an unacked batch would come back meanwhile (Redis claims)
        assert seen == list(range(250))
        assert max(sizes) <= 100 and max(sizes) > 1, sizes

    async def test_a_partial_failure_retries_only_the_named_events(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus()
        topic = _topic("partial")
        calls: list[tuple[int, int]] = []

        async def handler(events: list[Event]) -> None:
            failed = []
            for event in events:
                assert event.delivery is not None
                calls.append((event.payload["n"], event.delivery.count))
                if event.payload["n"] % 3 == 0 and event.delivery.count == 1:
                    failed.append(event)
            if failed:
                raise BatchFailed(failed, "multiples of three fail once")

        await bus.subscribe_batch(topic, handler, group="g", policy=FAST, max_wait_ms=200)
        await bus.publish_many([Event(topic, {"n": n}) for n in range(12)])
        await wait_until(lambda: len(calls) >= 16, self.capabilities.timeout, "16 calls")
        await asyncio.sleep(1.0)
        counts = Counter(n for n, _ in calls)
        assert counts == Counter({n: 2 if n % 3 == 0 else 1 for n in range(12)}), calls
        assert sorted(c for n, c in calls if n % 3 == 0) == [1] * 4 + [2] * 4

    async def test_a_failing_batch_is_retried_whole_then_dead_lettered_event_by_event(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus(codec=PoisonCodec())
        topic = _topic("whole")
        attempts: Counter[int] = Counter()
        dead: list[DLQEntry] = []

        async def handler(events: list[Event]) -> None:
            for event in events:
                attempts[event.payload["n"]] += 1
            raise RuntimeError("the batch failed")

        async def keep(entry: DLQEntry) -> None:
            dead.append(entry)

        await create_dlq_consumer(bus, f"{topic}.DLQ", keep, group="dlq")
        await bus.subscribe_batch(topic, handler, group="g", policy=FAST, max_wait_ms=200)
        events = [Event(topic, {"n": n}) for n in range(5)]
        await bus.publish_many([*events, Event(topic, {"poison": True})])
        await wait_until(lambda: len(dead) >= 6, self.capabilities.timeout, "6 dead letters")
        await asyncio.sleep(0.5)
        assert attempts == Counter({n: 2 for n in range(5)})  # max_retries=1: two calls each
        assert len(dead) == 6
        errors = sorted(entry.error_type for entry in dead)
        assert errors == ["DecodeError"] + ["RuntimeError"] * 5
