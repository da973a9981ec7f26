"""A scenario with successes, retries and dead letters, and the exact metrics it must produce.

Shared by the observability tests of every adapter, so each proves the same numbers.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dotmac.events import (
    Event,
    EventBus,
    Reject,
    create_exponential_retry_options,
    run_consumer,
)
from dotmac.events.dlq import DLQEntry


@dataclass(frozen=True, slots=True)
class Scenario:
    """``ok`` events succeed at once, ``flaky`` fail their first delivery, ``bad`` always fail."""

    ok: int = 6
    flaky: int = 3
    bad: int = 2
    max_retries: int = 2
    topic: str = field(default_factory=lambda: f"obs-{uuid.uuid4().hex[:10]}")
    group: str = "workers"
    dlq_group: str = "dlq-readers"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.DLQ"

    @property
    def published(self) -> int:
        return self.ok + self.flaky + self.bad

    @property
    def successes(self) -> int:
        return self.ok + self.flaky

    @property
    def failures(self) -> int:
        return self.flaky + self.bad * (self.max_retries + 1)

    @property
    def retries(self) -> int:
        return self.flaky + self.bad * self.max_retries

    def expected(self, adapter: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample the scenario must leave in a Prometheus registry, exactly."""

        def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
            return name, tuple(sorted(labels.items()))

        t, g, d = self.topic, self.group, self.dlq_topic
        return {
            key("events_published_total", topic=t, adapter=adapter, outcome="success"): float(
                self.published
            ),
            key("events_published_total", topic=t, adapter=adapter, outcome="error"): 0.0,
            key("event_publish_duration_seconds_count", topic=t, adapter=adapter): float(
                self.published
            ),
            # Dead letters are written as the original records, not published: they show in
            # events_dlq_total, never as publishes to the dead-letter topic.
            key("events_published_total", topic=d, adapter=adapter, outcome="success"): 0.0,
            key("event_publish_duration_seconds_count", topic=d, adapter=adapter): 0.0,
            key(
                "events_consumed_total", topic=t, adapter=adapter, group=g, outcome="success"
            ): float(self.successes),
            key("events_consumed_total", topic=t, adapter=adapter, group=g, outcome="error"): float(
                self.failures
            ),
            key("event_consume_duration_seconds_count", topic=t, adapter=adapter, group=g): float(
                self.successes + self.failures
            ),
            key("events_retried_total", topic=t, adapter=adapter, group=g): float(self.retries),
            key("events_dlq_total", topic=t, adapter=adapter, group=g): float(self.bad),
            key(
                "events_consumed_total",
                topic=d,
                adapter=adapter,
                group=self.dlq_group,
                outcome="success",
            ): float(self.bad),
            key(
                "event_consume_duration_seconds_count",
                topic=d,
                adapter=adapter,
                group=self.dlq_group,
            ): float(self.bad),
        }


@dataclass(slots=True)
class Outcome:
    calls: Counter[str] = field(default_factory=Counter)
    dead: list[DLQEntry] = field(default_factory=list)


async def run_scenario(bus: EventBus, scenario: Scenario, *, timeout: float = 30.0) -> Outcome:
    """Consume the scenario's events with run_consumer and wait until every outcome happened.

    Returns once each event reached its end (success, or its DLQ entry was consumed) and the
    subscriptions are closed, so every observer call has been made.
    """
    outcome = Outcome()
    done = asyncio.Event()
    dead_done = asyncio.Event()
    if scenario.bad == 0:
        dead_done.set()

    async def handler(event: Event) -> None:
        kind = event.payload["kind"]
        outcome.calls[kind] += 1
        if kind == "bad" or (kind == "flaky" and event.delivery_count == 1):
            raise RuntimeError(f"{kind} attempt {event.delivery_count}")
        outcome.calls["success"] += 1
        if outcome.calls["success"] == scenario.successes:
            done.set()

    async def dead(event: Event) -> None:
        outcome.dead.append(DLQEntry.from_event(event))
        if len(outcome.dead) == scenario.bad:
            dead_done.set()

    options = create_exponential_retry_options(
        max_retries=scenario.max_retries, base_delay_ms=5, max_delay_ms=20, jitter=False
    )
    main = await run_consumer(bus, scenario.topic, handler, options, group=scenario.group)
    dlq = await bus.subscribe(scenario.dlq_topic, dead, group=scenario.dlq_group)
    kinds = ["ok"] * scenario.ok + ["flaky"] * scenario.flaky + ["bad"] * scenario.bad
    for i, kind in enumerate(kinds):
        await bus.publish(Event(scenario.topic, {"kind": kind, "n": i}, key=f"k{i}"))
    try:
        async with asyncio.timeout(timeout):
            await done.wait()
            await dead_done.wait()
    finally:
        await main.close()
        await dlq.close()
    return outcome


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true (polling, for state no event tells us about)."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)


class HeldHandlers:
    """A handler that holds every event until ``gate`` opens, setting ``holding`` once
    ``hold_count`` are held (pending work for backlog tests), and one that always rejects."""

    def __init__(self, hold_count: int = 4) -> None:
        self.hold_count = hold_count
        self.held = 0
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    async def hold(self, event: Event) -> None:
        self.held += 1
        if self.held == self.hold_count:
            self.holding.set()
        await self.gate.wait()

    async def reject(self, event: Event) -> None:
        raise Reject("not today")
