"""Hostile handlers on memory and Redis: one that hangs, raises a BaseException subclass,
cancels its own task, swallows its cancellation, or is slow at concurrency 64.

Each test checks that the consumer keeps handling the valid events around them (on the same
keys, so on the same worker lanes), that close() returns within its timeout plus the
cancellation grace, and that nothing unhandled was acked: the broker's own figures
(``bus.stats``), and a second consumer of the group getting exactly the unhandled messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from dotmac.events import (
    ConsumerOptions,
    Event,
    EventBus,
    RedisConfig,
    create_memory_bus,
    create_redis_bus,
    run_consumer,
)
from dotmac.events.dlq import DeadLetters
from dotmac.events.testing import wait_until

pytestmark = pytest.mark.slow

_CANCEL_GRACE = 1.0  # what close() allows a cancelled handler (engine/subscription.py)


class Boom(BaseException):
    """Not an Exception: what a framework's own control-flow error looks like to us."""


class Harness:
    """Buses of one transport: memory shares one bus (its state lives there), Redis gets a
    fresh bus per consumer, as separate processes would."""

    def __init__(self, transport: str, make: Callable[[], EventBus]) -> None:
        self.transport = transport
        self._make = make
        self._shared: EventBus | None = None
        self._buses: list[EventBus] = []

    def bus(self) -> EventBus:
        if self.transport == "memory":
            if self._shared is None:
                self._shared = self._make()
                self._buses.append(self._shared)
            return self._shared
        bus = self._make()
        self._buses.append(bus)
        return bus

    async def close(self) -> None:
        for bus in self._buses:
            await bus.close(timeout=1.0)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        made = Harness("memory", create_memory_bus)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        config = RedisConfig(
            url=url, key_prefix=prefix, block_ms=100, claim_idle_ms=500, claim_interval=0.1
        )
        made = Harness("redis", lambda: create_redis_bus(config))
    yield made
    await made.close()


@dataclass(frozen=True)
class Kind:
    """One hostile behaviour: what the handler does, and the dead letter it must lead to."""

    name: str
    act: Callable[[], Awaitable[None]]
    error_type: str | None  # None: the handler returns, so the message is handled
    attempts: int
    options: ConsumerOptions


async def _hang() -> None:
    await asyncio.Event().wait()


async def _raise_base_exception() -> None:
    raise Boom("not an Exception")


async def _cancel_itself() -> None:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(1)


async def _cancel_itself_and_return() -> None:
    """The cancellation lands after the handler returned, at the worker's next await."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()


_FAST = {"backoff_base_ms": 10, "backoff_max_delay_ms": 20, "jitter": False}
KINDS = [
    Kind(
        "hangs",
        _hang,
        "HandlerTimeout",
        2,
        ConsumerOptions(max_retries=1, handler_timeout=0.2, **_FAST),
    ),
    Kind("raises-base-exception", _raise_base_exception, "Boom", 1, ConsumerOptions(**_FAST)),
    Kind("cancels-itself", _cancel_itself, "CancelledError", 1, ConsumerOptions(**_FAST)),
    Kind("cancels-itself-and-returns", _cancel_itself_and_return, None, 0, ConsumerOptions()),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
async def test_hostile_messages_are_dead_lettered_and_their_lanes_carry_on(
    harness: Harness, kind: Kind
) -> None:
    """Hostile messages share keys (so worker lanes) with valid ones published after them:
    every valid one is handled once, each hostile one is dead-lettered with its error (or
    handled, when the handler returned), and the group ends with nothing pending."""
    bus = harness.bus()
    topic = f"hostile-{kind.name}"
    handled: list[int] = []
    hostile_calls: list[int] = []

    async def handler(event: Event) -> None:
        if event.payload["hostile"]:
            hostile_calls.append(event.payload["n"])
            await kind.act()
        else:
            handled.append(event.payload["n"])

    subscription = await run_consumer(bus, topic, handler, kind.options, group="g", concurrency=4)
    events: list[Event] = []
    for n in range(60):
        hostile = n % 10 == 3
        events.append(Event(topic, {"n": n, "hostile": hostile}, key=f"k{n % 4}"))
    for event in events:
        await bus.publish(event)
    valid = sorted(e.payload["n"] for e in events if not e.payload["hostile"])
    hostile = [e.payload["n"] for e in events if e.payload["hostile"]]
    letters = DeadLetters(bus, f"{topic}.DLQ")
    expected_dead = 0 if kind.error_type is None else len(hostile)
    dead: list[Any] = []

    async def settled() -> bool:
        dead[:] = await letters.list(limit=None)
        return sorted(handled) == valid and len(dead) >= expected_dead

    deadline = time.monotonic() + 20
    while not await settled():
        assert time.monotonic() < deadline, (len(handled), len(dead), hostile_calls)
        await asyncio.sleep(0.05)
    # The lanes that met a hostile message still work: another round on the same keys.
    later = [Event(topic, {"n": 100 + n, "hostile": False}, key=f"k{n % 4}") for n in range(8)]
    for event in later:
        await bus.publish(event)
    await wait_until(lambda: len(handled) == len(valid) + 8, 10, "the later round handled")
    assert sorted(handled) == [*valid, *range(100, 108)]  # each exactly once
    assert len(dead) == expected_dead
    assert {d.error_type for d in dead} <= {kind.error_type}
    assert sorted(d.original_event.payload["n"] for d in dead if d.original_event) == sorted(
        hostile[:expected_dead]
    )
    assert {d.attempts for d in dead} <= {kind.attempts}
    assert (await bus.health()).healthy
    began = time.monotonic()
    await subscription.close(timeout=2.0)
    assert time.monotonic() - began < 2.0 + _CANCEL_GRACE
    stats = await bus.stats(topic, "g")
    assert stats.pending == 0  # nothing left unacked, nothing acked twice
    assert stats.dlq_depth == expected_dead


async def _stuck_forever() -> None:
    await asyncio.Event().wait()


async def _swallows_cancellation() -> None:
    """Catches every cancellation and keeps going for about 2 s."""
    for _ in range(20):
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            continue


STUCK = {"hangs-at-close": _stuck_forever, "swallows-cancellation": _swallows_cancellation}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(STUCK))
async def test_close_is_bounded_and_gives_back_only_the_unhandled(
    harness: Harness, name: str
) -> None:
    """close(timeout=0.3) returns within the timeout plus the cancellation grace while four
    handlers are stuck (hanging, or swallowing their cancellation for 2 s); a second consumer
    of the group then gets exactly the messages the first did not finish, once each, even
    after the stubborn handlers returned late."""
    act = STUCK[name]
    bus = harness.bus()
    topic = f"stuck-{name}"
    handled: list[int] = []
    stuck_started: list[int] = []
    stuck_returned: list[int] = []

    async def first(event: Event) -> None:
        n = event.payload
        if n < 4:
            stuck_started.append(n)
            try:
                await act()
            finally:
                stuck_returned.append(n)
        else:
            handled.append(n)

    subscription = await run_consumer(bus, topic, first, group="g", concurrency=4)
    total = 40
    for n in range(total):  # keys k0..k3: each lane gets one stuck message and waits behind it
        await bus.publish(Event(topic, n, key=f"k{n % 4}"))
    await asyncio.sleep(0.5)
    assert handled == [] and stuck_started  # every lane with messages is stuck
    began = time.monotonic()
    await subscription.close(timeout=0.3)
    closing = time.monotonic() - began
    assert closing < 0.3 + _CANCEL_GRACE + 0.3, closing
    if name == "swallows-cancellation":  # their late returns must not ack anything
        await wait_until(
            lambda: len(stuck_returned) == len(stuck_started), 5, "the stubborn ones returned"
        )
    second_bus = harness.bus()
    again: list[int] = []

    async def second(event: Event) -> None:
        again.append(event.payload)

    second_subscription = await run_consumer(second_bus, topic, second, group="g")
    unhandled = sorted(set(range(total)) - set(handled))
    await wait_until(lambda: len(again) >= len(unhandled), 15, "the unhandled ones again")
    await asyncio.sleep(0.3)  # an extra copy would arrive now
    assert sorted(again) == unhandled
    assert handled == []
    await second_subscription.close()
    assert (await second_bus.stats(topic, "g")).pending == 0


@pytest.mark.timeout(60)
async def test_slow_handlers_at_concurrency_64_close_within_the_timeout(harness: Harness) -> None:
    """3,000 events through 64 handlers of 20 ms each, closed mid-way: close() waits for the
    running handlers only, and the events not handled are exactly what a second consumer gets."""
    bus = harness.bus()
    topic = "slow-64"
    handled: list[int] = []

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.02)
        handled.append(event.payload)

    total = 3000
    subscription = await run_consumer(bus, topic, slow, group="g", concurrency=64)
    await bus.publish_many([Event(topic, n, key=f"k{n % 100}") for n in range(total)])
    await wait_until(lambda: len(handled) >= 500, 20, "a first part handled")
    began = time.monotonic()
    await subscription.close(timeout=0.5)
    assert time.monotonic() - began < 0.5 + 0.3  # running handlers need 20 ms, not the grace
    first = list(handled)
    assert len(first) == len(set(first)) < total
    second_bus = harness.bus()
    again: list[int] = []

    async def second(event: Event) -> None:
        again.append(event.payload)

    second_subscription = await run_consumer(second_bus, topic, second, group="g")
    await wait_until(lambda: len(first) + len(again) >= total, 20, "the rest handled")
    await asyncio.sleep(0.3)
    assert sorted(first + again) == list(range(total))  # each exactly once
    await second_subscription.close()
    assert (await second_bus.stats(topic, "g")).pending == 0
