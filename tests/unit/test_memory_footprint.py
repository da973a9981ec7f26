"""What the memory bus holds per waiting event, measured with tracemalloc (bytes, not time).

A named group that joined once and left lags behind every later event, so each published event
stays held. The bound: held bytes per event <= 1.5 x its encoded size + ``FIXED_OVERHEAD``. The
log costs two list slots per event (16 B, up to twice that just before it compacts) next to the
event's bytes object (33 B header + the encoding) and its key string; that is what the fixed
overhead covers. There is no object or dict per entry.

The events are encoded to exact-size bytes: ``orjson.dumps`` can keep a ~4 KiB allocation behind
each result, which is the codec's to trim (a copy of the exact size). The bus keeps the bytes it
is given and nothing more.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

from dotmac.events import Event, JsonCodec, MemoryBus, MemoryConfig, create_memory_bus
from dotmac.events.testing import wait_until

EVENTS = 5_000
FIXED_OVERHEAD = 128
"""Bytes per held event allowed on top of 1.5x its encoding."""
LOG_SLOTS = 40
"""Bytes per held event the log may add to the event's own bytes object and key string."""


class ExactBytesCodec(JsonCodec):
    """JsonCodec whose bytes are an exact-size copy, whatever orjson allocated behind them."""

    def __init__(self) -> None:
        super().__init__()
        self.produced = 0  # sys.getsizeof of every result: the events' own bytes objects

    def encode(self, event: Event) -> bytes:
        data = bytes(memoryview(super().encode(event)))
        self.produced += sys.getsizeof(data)
        return data


def _key(i: int) -> str:
    return f"customer-{i % 97}"


def _event(i: int) -> Event:
    payload = {"order_id": f"ord-{i:08d}", "amount": 1234.5 + i % 100, "currency": "EUR"}
    return Event("footprint", payload, key=_key(i))


async def _never(event: Event) -> None:
    raise AssertionError("the lagging group never reads")


async def _publish_behind_a_lagging_group(bus: MemoryBus, events: int = EVENTS) -> int:
    """Publish ``events`` that a named group (joined, then left) still needs; return the bytes
    they hold."""
    subscription = await bus.subscribe("footprint", _never, group="lagging")
    await subscription.close()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(events):
        await bus.publish(_event(i))
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


async def test_held_bytes_per_event_stay_within_one_and_a_half_times_the_encoding() -> None:
    codec = ExactBytesCodec()
    encoded = sum(len(codec.encode(_event(i))) for i in range(0, EVENTS, 10)) / (EVENTS / 10)
    assert 200 < encoded < 300  # the ~250-byte events the bound is stated for
    codec.produced = 0
    bus = create_memory_bus(MemoryConfig(max_queue_size=EVENTS + 1), codec=codec)
    tracemalloc.start()
    try:
        held = await _publish_behind_a_lagging_group(bus)
    finally:
        tracemalloc.stop()
    try:
        stats = await bus.stats("footprint", "lagging")
        assert (stats.length, stats.lag) == (EVENTS, EVENTS)
    finally:
        await bus.close()
    bound = 1.5 * encoded + FIXED_OVERHEAD
    per_event = held / EVENTS
    assert per_event <= bound, (
        f"{per_event:.0f} B held per {encoded:.0f} B event (bound {bound:.0f})"
    )
    # Where that goes: the bytes objects and key strings themselves, then the log's slots.
    own = codec.produced + sum(sys.getsizeof(_key(i)) for i in range(EVENTS))
    log = (held - own) / EVENTS
    assert log <= LOG_SLOTS, f"the log adds {log:.0f} B per event to its bytes and key"


async def test_acked_events_are_freed() -> None:
    bus = create_memory_bus(MemoryConfig(max_queue_size=EVENTS + 1), codec=ExactBytesCodec())
    handled = 0

    async def count(event: Event) -> None:
        nonlocal handled
        handled += 1

    async def publish_then_consume(events: int) -> int:
        nonlocal handled
        handled = 0
        held = await _publish_behind_a_lagging_group(bus, events)
        subscription = await bus.subscribe("footprint", count, group="lagging")
        await wait_until(lambda: handled == events, 60, "every event handled")
        topic = bus._topics["footprint"]
        await wait_until(lambda: topic.end == topic.base, 5, "every event trimmed")
        await subscription.close()
        return held

    tracemalloc.start()
    try:
        await publish_then_consume(500)  # warms what the interpreter and codec keep for good
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        held = await publish_then_consume(EVENTS)
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        await bus.close()
    assert left < held / 100, f"{left} B still held after every event was acked ({held} B before)"
