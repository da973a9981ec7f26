"""Memory bus specifics: sync construction, config checks, backpressure, history, request, close,
and the broker underneath driven through its Receiver (floors, trimming, waking)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dotmac.events import (
    BusClosedError,
    ConfigurationError,
    Event,
    EventBus,
    MemoryBus,
    MemoryConfig,
    PublishError,
    Reject,
    RequestTimeout,
    create_memory_bus,
)
from dotmac.events.testing import wait_until
from dotmac.events.transport import Receiver


class Gate:
    """A handler that records events and blocks until opened."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.seen: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.seen.append(event)
        await self.opened.wait()


# --- the seed README's "Unit Testing with Memory Adapter" snippet, unchanged ---------------------


@pytest.mark.asyncio
async def test_event_processing():
    bus = create_memory_bus()
    processed_events = []

    async def handler(event):
        processed_events.append(event)

    await bus.subscribe("test.topic", handler)

    # Publish test event
    event = Event(topic="test.topic", payload={"test": "data"})
    await bus.publish(event)

    # Wait for processing
    await asyncio.sleep(0.1)

    assert len(processed_events) == 1
    assert processed_events[0].payload["test"] == "data"

    await bus.close()


# --- construction ----------------------------------------------------------------------------


def test_create_memory_bus_outside_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    bus = create_memory_bus(MemoryConfig(max_queue_size=5, enable_persistence=True))
    assert isinstance(bus, MemoryBus) and isinstance(bus, EventBus)
    assert bus.adapter == "memory"

    async def main() -> list[Any]:
        got: asyncio.Queue[Event] = asyncio.Queue()
        await bus.subscribe("sync.made", got.put)
        await bus.publish(Event("sync.made", {"n": 1}))
        await bus.publish(Event("sync.made", {"n": 2}))
        payloads = [(await asyncio.wait_for(got.get(), 5)).payload for _ in range(2)]
        await bus.close()
        return payloads

    assert asyncio.run(main()) == [{"n": 1}, {"n": 2}]


def test_defaults() -> None:
    config = MemoryConfig()
    assert config.max_queue_size == 10_000
    assert config.enable_persistence is False
    assert config.publish_timeout == 30.0
    assert config.new_group_start == "earliest"
    assert create_memory_bus().config == config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_queue_size": -3}, "max_queue_size"),
        ({"max_queue_size": 2.5}, "max_queue_size"),
        ({"max_queue_size": "100"}, "max_queue_size"),
        ({"publish_timeout": 0}, "publish_timeout"),
        ({"publish_timeout": -1.0}, "publish_timeout"),
        ({"publish_timeout": "30"}, "publish_timeout"),
        ({"publish_timeout": float("nan")}, "publish_timeout"),
        ({"new_group_start": "middle"}, "new_group_start"),
        ({"close_timeout": 0}, "close_timeout"),
        ({"close_timeout": "10"}, "close_timeout"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        MemoryConfig(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: must be")


async def test_subscribe_validates_its_arguments() -> None:
    async with create_memory_bus() as bus:
        for kwargs, field in (
            ({"concurrency": 0}, "concurrency"),
            ({"group": ""}, "group"),
        ):
            with pytest.raises(ConfigurationError, match=f"^{field}:"):
                await bus.subscribe("t", Gate(), **kwargs)
        with pytest.raises(ConfigurationError, match=r"^topic:"):
            await bus.subscribe("", Gate())


# --- backpressure ------------------------------------------------------------------------------


async def _idle_group(bus: MemoryBus, topic: str, group: str) -> None:
    """Create ``group`` on ``topic`` with nobody consuming: its backlog only grows."""
    subscription = await bus.subscribe(topic, Gate(), group=group)
    await subscription.close()


async def test_publish_waits_for_room_and_proceeds_once_a_consumer_acks() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=3, publish_timeout=5))
    gate = Gate()
    try:
        await bus.subscribe("bp", gate, group="g")
        for i in range(3):
            await bus.publish(Event("bp", {"i": i}))
        blocked = asyncio.create_task(bus.publish(Event("bp", {"i": 3})))
        await asyncio.sleep(0.1)
        assert not blocked.done(), "publish must wait while 3 events are unacked"
        assert len(bus.history("bp")) == 3
        gate.opened.set()
        await asyncio.wait_for(blocked, 5)
        await wait_until(lambda: len(gate.seen) == 4, 5, "all four handled")
        assert [e.payload["i"] for e in gate.seen] == [0, 1, 2, 3]
    finally:
        await bus.close()


async def test_publish_raises_publish_error_past_the_timeout() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=2, publish_timeout=0.2))
    try:
        await _idle_group(bus, "full", "slow-group")
        await bus.publish(Event("full", 1))
        await bus.publish(Event("full", 2))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PublishError) as info:
            await bus.publish(Event("full", 3))
        assert 0.15 <= loop.time() - started < 2
        message = str(info.value)
        assert "'full' is full" in message
        assert "max_queue_size=2" in message
        assert "0.2s" in message
        assert [e.payload for e in bus.history("full")] == [1, 2]  # the third was not added
    finally:
        await bus.close()


async def test_backpressure_with_persistence_wakes_the_publisher() -> None:
    bus = create_memory_bus(
        MemoryConfig(max_queue_size=2, publish_timeout=3, enable_persistence=True)
    )
    gate = Gate()
    try:
        await bus.subscribe("kept", gate, group="g")
        await bus.publish(Event("kept", 0))
        await bus.publish(Event("kept", 1))
        blocked = asyncio.create_task(bus.publish(Event("kept", 2)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        gate.opened.set()
        await asyncio.wait_for(blocked, 2)  # well before publish_timeout
        assert [e.payload for e in bus.history("kept")] == [0, 1, 2]
    finally:
        await bus.close()


async def test_topic_without_groups_never_blocks_and_keeps_the_newest() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=3, publish_timeout=0.1))
    try:
        for i in range(10):
            await bus.publish(Event("nobody", i))
        assert [e.payload for e in bus.history("nobody")] == [7, 8, 9]
        got: asyncio.Queue[Event] = asyncio.Queue()
        await bus.subscribe("nobody", got.put, group="late")
        payloads = [(await asyncio.wait_for(got.get(), 5)).payload for _ in range(3)]
        assert payloads == [7, 8, 9]
    finally:
        await bus.close()


async def _receiver(bus: MemoryBus, topic: str, group: str) -> Receiver:
    """A bare consumer of ``group``: the test decides what it fetches, acks and releases."""
    return await bus._open_receiver(topic, group, private=False, prefetch=100)


async def test_waiting_publishers_get_freed_slots_one_each_in_arrival_order() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=2, publish_timeout=10))
    try:
        receiver = await _receiver(bus, "fifo", "g")
        await bus.publish_many([Event("fifo", "first"), Event("fifo", "second")])
        waiting = []
        for i in range(4):
            waiting.append(asyncio.create_task(bus.publish(Event("fifo", i))))
            await asyncio.sleep(0)  # each queues before the next starts
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in waiting)
        held = list(await receiver.fetch(10, []))
        for freed in range(1, 5):
            await receiver.ack([held.pop(0)])
            await wait_until(lambda n=freed: sum(t.done() for t in waiting) == n, 5, "one in")
            assert all(t.done() for t in waiting[:freed]), "a later publisher went first"
            assert not any(t.done() for t in waiting[freed:]), "one slot let in two publishers"
            held.extend(await receiver.fetch(10, []))
        assert [e.payload for e in bus.history("fifo")] == [2, 3]
    finally:
        await bus.close()


async def test_a_cancelled_publisher_hands_its_slot_to_the_next() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=1, publish_timeout=10))
    try:
        receiver = await _receiver(bus, "pass", "g")
        await bus.publish(Event("pass", "held"))
        never_granted = asyncio.create_task(bus.publish(Event("pass", "a")))
        granted_then_cancelled = asyncio.create_task(bus.publish(Event("pass", "b")))
        last = asyncio.create_task(bus.publish(Event("pass", "c")))
        await asyncio.sleep(0.01)
        never_granted.cancel()
        await asyncio.sleep(0.01)
        await receiver.ack(await receiver.fetch(10, []))  # one slot: promised to "b"
        granted_then_cancelled.cancel()  # before "b" ran to use it
        await asyncio.wait_for(last, 5)
        assert never_granted.cancelled() and granted_then_cancelled.cancelled()
        assert [e.payload for e in bus.history("pass")] == ["c"]
    finally:
        await bus.close()


async def test_a_publisher_that_timed_out_leaves_no_trace() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=1, publish_timeout=0.05))
    try:
        receiver = await _receiver(bus, "gone", "g")
        await bus.publish(Event("gone", 0))
        results = await asyncio.gather(
            *(bus.publish(Event("gone", i)) for i in (1, 2)), return_exceptions=True
        )
        assert all(isinstance(r, PublishError) for r in results)
        await receiver.ack(await receiver.fetch(10, []))
        await asyncio.wait_for(bus.publish(Event("gone", 3)), 1)  # no stale queue ahead of it
        assert [e.payload for e in bus.history("gone")] == [3]
    finally:
        await bus.close()


async def test_the_last_private_group_leaving_lets_publishers_in() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=2, publish_timeout=10))
    gate = Gate()
    try:
        subscription = await bus.subscribe("private", gate)
        await bus.publish_many([Event("private", 0), Event("private", 1)])
        blocked = asyncio.create_task(bus.publish(Event("private", 2)))
        await wait_until(lambda: len(gate.seen) == 1, 5, "handler holding the first")
        assert not blocked.done()
        await subscription.close(timeout=0.05)
        await asyncio.wait_for(blocked, 5)
        assert [e.payload for e in bus.history("private")] == [1, 2]  # the newest two
    finally:
        await bus.close()


# --- the floor: what is trimmed and what counts against max_queue_size -------------------------


async def test_out_of_order_acks_trim_only_below_the_lowest_unacked() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=5, publish_timeout=0.05))
    try:
        receiver = await _receiver(bus, "floor", "g")
        await bus.publish_many([Event("floor", i) for i in range(5)])
        batch = list(await receiver.fetch(10, []))
        assert [d.offset for d in batch] == [0, 1, 2, 3, 4]
        await receiver.ack(batch[1:4])
        assert [e.payload for e in bus.history("floor")] == [0, 1, 2, 3, 4]
        with pytest.raises(PublishError):  # offset 0 is unacked: still five held
            await bus.publish(Event("floor", 5))
        await receiver.ack(batch[1:2])  # acking twice is harmless
        await receiver.ack(batch[:1])
        assert [e.payload for e in bus.history("floor")] == [4]
        await bus.publish(Event("floor", 5))
        await receiver.ack([batch[4], *await receiver.fetch(10, [])])
        assert bus.history("floor") == []
        assert (await bus.stats("floor", "g")).pending == 0
    finally:
        await bus.close()


async def test_the_slowest_group_holds_the_log() -> None:
    bus = create_memory_bus()
    try:
        fast, slow = await _receiver(bus, "two", "fast"), await _receiver(bus, "two", "slow")
        await bus.publish_many([Event("two", i) for i in range(4)])
        await fast.ack(await fast.fetch(10, []))
        assert len(bus.history("two")) == 4
        slow_batch = list(await slow.fetch(10, []))
        await slow.ack(slow_batch[:2])
        assert [e.payload for e in bus.history("two")] == [2, 3]
        await slow.ack(slow_batch[2:])
        assert bus.history("two") == []
        stats = await bus.stats("two", "slow")
        assert (stats.length, stats.lag, stats.pending) == (0, 0, 0)
    finally:
        await bus.close()


async def test_a_long_log_trims_and_keeps_offsets_straight() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=50, publish_timeout=1))
    try:
        receiver = await _receiver(bus, "long", "g")
        seen: list[int] = []
        for start in range(0, 1000, 40):
            await bus.publish_many([Event("long", i) for i in range(start, start + 40)])
            batch = list(await receiver.fetch(30 if start % 80 else 50, []))
            seen.extend(d.offset for d in batch if d.offset is not None)
            await receiver.ack(batch[::-1])
            held = [e.payload for e in bus.history("long")]
            assert held == list(range(start + 40 - len(held), start + 40))
        assert seen == list(range(1000))
        assert bus.history("long") == []
        for i in range(120):  # a topic nobody reads keeps the newest max_queue_size
            await bus.publish(Event("nobody", i))
        assert [e.payload for e in bus.history("nobody")] == list(range(70, 120))
    finally:
        await bus.close()


# --- waking consumers --------------------------------------------------------------------------


async def test_competing_receivers_each_message_once_and_release_wakes_the_other() -> None:
    bus = create_memory_bus()
    try:
        a, b = await _receiver(bus, "c", "workers"), await _receiver(bus, "c", "workers")
        fetches = [asyncio.create_task(r.fetch(10, [])) for r in (a, b)]
        await asyncio.sleep(0.01)
        await bus.publish(Event("c", 0))
        done, pending = await asyncio.wait(fetches, timeout=5, return_when="FIRST_COMPLETED")
        (first,) = done
        (waiting,) = pending
        holder = a if first is fetches[0] else b
        assert [d.offset for d in first.result()] == [0]
        await asyncio.sleep(0.01)
        assert not waiting.done(), "the other receiver got a message already handed out"

        await holder.release(first.result())  # the holder leaves: the sleeper takes it over
        (again,) = await asyncio.wait_for(waiting, 5)
        assert (again.offset, again.count) == (0, 2)
        assert await holder.redeliver(first.result()[0]) is None
    finally:
        await bus.close()


async def test_interrupt_ends_a_blocked_fetch() -> None:
    bus = create_memory_bus()
    try:
        receiver = await _receiver(bus, "i", "g")
        fetch = asyncio.create_task(receiver.fetch(10, []))
        await asyncio.sleep(0.01)
        receiver.interrupt()
        assert await asyncio.wait_for(fetch, 5) == []
        await receiver.close()
        other = await _receiver(bus, "i", "g")
        fetch = asyncio.create_task(other.fetch(10, []))
        await bus.publish(Event("i", 1))
        assert [d.count for d in await asyncio.wait_for(fetch, 5)] == [1]
    finally:
        await bus.close()


# --- persistence ---------------------------------------------------------------------------------


async def test_without_persistence_acked_events_are_dropped() -> None:
    bus = create_memory_bus()
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    try:
        await bus.subscribe("t", handler, group="g")
        await bus.publish_many([Event("t", i) for i in range(5)])
        await wait_until(lambda: len(seen) == 5, 5, "five handled")
        await wait_until(lambda: bus.history("t") == [], 5, "acked events trimmed")
    finally:
        await bus.close()


async def test_persistence_keeps_history_and_rewind_replays_it() -> None:
    bus = create_memory_bus(MemoryConfig(enable_persistence=True))
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    try:
        events = [Event("orders", {"n": i}, key="k") for i in range(5)]
        await bus.subscribe("orders", handler, group="g")
        await bus.publish_many(events)
        await wait_until(lambda: len(seen) == 5, 5, "first pass")
        await asyncio.sleep(0.05)  # let the acks land
        assert bus.history("orders") == events
        assert (await bus.stats("orders", "g")).lag == 0

        bus.rewind("orders", "g", 2)
        await wait_until(lambda: len(seen) == 8, 5, "replay from offset 2")
        assert seen[5:] == events[2:]
        assert all(e.delivery_count == 1 for e in seen)  # a replay is a fresh delivery

        bus.rewind("orders", "g")
        await wait_until(lambda: len(seen) == 13, 5, "replay from the start")
        assert seen[8:] == events
        assert bus.history("missing") == []
    finally:
        await bus.close()


async def test_rewind_errors_name_the_field() -> None:
    bus = create_memory_bus(MemoryConfig(enable_persistence=True))
    try:
        await _idle_group(bus, "r", "g")
        await bus.publish(Event("r", 1))
        with pytest.raises(ConfigurationError, match=r"^group:"):
            bus.rewind("r", "nope")
        with pytest.raises(ConfigurationError, match=r"^group:"):
            bus.rewind("no-topic", "g")
        with pytest.raises(ConfigurationError, match=r"^offset: .*\[0, 1\], got 5"):
            bus.rewind("r", "g", 5)
        with pytest.raises(ConfigurationError, match=r"^offset:"):
            bus.rewind("r", "g", -1)
    finally:
        await bus.close()


# --- request / reply ---------------------------------------------------------------------------


async def test_request_returns_the_handlers_return_value() -> None:
    bus = create_memory_bus()

    async def price(event: Event) -> dict[str, Any]:
        return {"sku": event.payload["sku"], "price": 9.99, "delivery": event.delivery_count}

    try:
        await bus.subscribe("price.lookup", price, group="pricing")
        replies = await asyncio.gather(
            *(bus.request("price.lookup", {"sku": f"s{i}"}, timeout=5) for i in range(20))
        )
        assert replies == [{"sku": f"s{i}", "price": 9.99, "delivery": 1} for i in range(20)]
        assert bus._replies == {}
        assert bus._inbox in bus._topics
    finally:
        await bus.close()
    assert not [t for t in bus._topics if t.startswith("_inbox.")], "the inbox outlived the bus"


async def test_request_timeout_leaves_nothing_behind() -> None:
    bus = create_memory_bus()
    release = asyncio.Event()
    finished: list[int] = []

    async def slow(event: Event) -> str:
        await release.wait()
        finished.append(event.payload)
        return "late"

    try:
        with pytest.raises(RequestTimeout, match=r"no reply on .nobody\.listens.") as info:
            await bus.request("nobody.listens", 1, timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        assert bus._replies == {}

        await bus.subscribe("slow.op", slow, group="g")
        with pytest.raises(RequestTimeout):
            await bus.request("slow.op", 2, timeout=0.05)
        assert bus._replies == {}
        release.set()  # the late reply arrives and is dropped quietly
        await wait_until(lambda: finished == [2], 5, "slow handler done")
        await asyncio.sleep(0.05)
        assert bus._replies == {}
        assert await bus.request("slow.op", 3, timeout=5) == "late"
    finally:
        await bus.close()


async def test_request_to_a_failing_handler_times_out() -> None:
    bus = create_memory_bus()

    async def broken(event: Event) -> None:
        raise Reject("cannot answer")

    try:
        await bus.subscribe("q", broken, group="g")
        with pytest.raises(RequestTimeout):
            await bus.request("q", None, timeout=0.1)
        assert bus._replies == {}
    finally:
        await bus.close()


# --- close -------------------------------------------------------------------------------------


async def test_everything_after_close_raises_bus_closed() -> None:
    bus = create_memory_bus()
    await bus.close()
    assert bus.closed
    for call in (
        bus.publish(Event("t", 1)),
        bus.publish_many([Event("t", 1)]),
        bus.subscribe("t", Gate()),
        bus.request("t", 1, timeout=1),
    ):
        with pytest.raises(BusClosedError, match="memory bus is closed") as info:
            await call
        assert isinstance(info.value, RuntimeError)


async def test_close_is_idempotent_and_closes_subscriptions() -> None:
    bus = create_memory_bus()
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    first = await bus.subscribe("t", handler, group="a")
    second = await bus.subscribe("t", handler, concurrency=4)
    await bus.publish(Event("t", 1))
    await wait_until(lambda: len(seen) == 2, 5, "both groups handled it")
    await asyncio.gather(bus.close(), bus.close())
    await bus.close()
    assert first.closed and second.closed
    await first.close()  # a closed subscription closes again harmlessly
    assert not (await bus.health()).healthy


async def test_close_waits_for_running_handlers() -> None:
    bus = create_memory_bus()
    done: list[int] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(0.1)
        done.append(event.payload)

    await bus.subscribe("t", handler, group="g")
    await bus.publish(Event("t", 1))
    await wait_until(lambda: bus._topics["t"].groups["g"].counts != {}, 5, "handed out")
    await bus.close(timeout=5)
    assert done == [1]


async def test_async_with_closes_the_bus() -> None:
    async with create_memory_bus() as bus:
        assert not bus.closed
    assert bus.closed
    with pytest.raises(BusClosedError):
        await bus.publish(Event("t", 1))


# --- stats and health ----------------------------------------------------------------------------


async def test_stats_numbers() -> None:
    bus = create_memory_bus()
    gate = Gate()
    try:
        empty = await bus.stats("never")
        assert (empty.length, empty.lag, empty.pending, empty.dlq_depth) == (0, None, None, 0)

        await _idle_group(bus, "s", "g")
        await bus.publish_many([Event("s", i) for i in range(5)])
        await bus.publish_many([Event("s.DLQ", i) for i in range(2)])
        stats = await bus.stats("s", "g")
        assert (stats.topic, stats.group) == ("s", "g")
        assert (stats.length, stats.lag, stats.pending, stats.dlq_depth) == (5, 5, 0, 2)
        no_group = await bus.stats("s")
        assert (no_group.length, no_group.lag, no_group.pending) == (5, None, None)
        assert (await bus.stats("s", "unknown")).lag is None

        await bus.subscribe("s", gate, group="g")  # prefetches all five, handles one at a time
        await wait_until(lambda: len(gate.seen) == 1, 5, "first handled")
        await wait_until(lambda: bus._topics["s"].groups["g"].cursor == 5, 5, "all fetched")
        stats = await bus.stats("s", "g")
        assert (stats.length, stats.lag, stats.pending) == (5, 0, 5)

        gate.opened.set()
        await wait_until(lambda: len(gate.seen) == 5, 5, "all handled")
        await wait_until(lambda: bus.history("s") == [], 5, "all acked")
        stats = await bus.stats("s", "g")
        assert (stats.length, stats.lag, stats.pending) == (0, 0, 0)
    finally:
        await bus.close()


async def test_stats_count_released_messages_as_lag() -> None:
    bus = create_memory_bus()
    gate = Gate()
    try:
        subscription = await bus.subscribe("r", gate, group="g")
        await bus.publish_many([Event("r", i) for i in range(3)])
        await wait_until(lambda: len(gate.seen) == 1, 5, "first handler running")
        await subscription.close(timeout=0.05)  # handler never finishes: all three go back
        stats = await bus.stats("r", "g")
        assert (stats.length, stats.lag, stats.pending) == (3, 3, 0)
    finally:
        await bus.close()


async def test_health() -> None:
    bus = create_memory_bus()
    status = await bus.health()
    assert status.healthy and status.adapter == "memory" and status.latency_ms >= 0
    await bus.publish(Event("a", 1))
    assert (await bus.health()).details == {"topics": 1}
    await bus.close()
    assert not (await bus.health()).healthy


async def test_handlers_still_running_at_close_can_publish() -> None:
    """close() waits for running handlers, so what they publish must still go through; only
    once every subscription has closed does publishing stop."""
    bus = create_memory_bus()
    started = asyncio.Event()

    async def slow(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.2)
        await bus.publish(Event("audit", {"done": event.payload}))

    await bus.subscribe("jobs", slow, group="g")
    await bus.publish(Event("jobs", 1))
    await asyncio.wait_for(started.wait(), 5)
    await bus.close()
    assert [e.payload for e in bus.history("audit")] == [{"done": 1}]
    assert bus.history("jobs") == []  # handled, so acked and trimmed
    with pytest.raises(BusClosedError):
        await bus.publish(Event("audit", {}))
