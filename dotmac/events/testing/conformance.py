"""The conformance suite: the EventBus contract as tests every transport must pass.

Use it for your own adapter too. Subclass :class:`ConformanceSuite` in a test module, set
``capabilities`` and provide a ``bus_factory`` fixture returning a :class:`BusFactory` that
creates a fresh bus on a real broker each call (it must pass ``codec`` and ``observer`` through)::

    class TestMyBusConformance(ConformanceSuite):
        capabilities = Capabilities(request_reply=False)

        @pytest.fixture
        def bus_factory(self, my_broker_url: str) -> BusFactory:
            async def make(**options: Any) -> EventBus:
                return create_my_bus(MyConfig(url=my_broker_url), **options)
            return make

The suite needs pytest-asyncio (``asyncio_mode = "auto"``). Every test uses its own topics.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from dotmac.events.bus import EventBus, Subscription
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.consumer import ConsumerOptions, run_consumer
from dotmac.events.dlq import DLQEntry, create_dlq_consumer
from dotmac.events.errors import (
    BusClosedError,
    EncodeError,
    Reject,
    RequestTimeout,
    UnsupportedOperation,
)
from dotmac.events.event import Event, EventMetadata
from dotmac.events.observability.observer import NoopObserver, Observer
from dotmac.events.testing.batches import BatchConformance
from dotmac.events.testing.dead_letters import DeadLetterConformance
from dotmac.events.testing.delays import DelayConformance
from dotmac.events.testing.patterns import PatternConformance
from dotmac.events.testing.reading import ReadingConformance
from dotmac.events.testing.support import BusFactory, Capabilities, PoisonCodec, wait_until

__all__ = ["BusFactory", "Capabilities", "ConformanceSuite", "wait_until"]


def _topic(name: str) -> str:
    return f"conformance.{name}.{uuid.uuid4().hex[:10]}"


FAST_RETRIES = ConsumerOptions(max_retries=2, backoff_base_ms=10, jitter=False)


class _SwitchableDLQCodec(JsonCodec):
    """Refuses to encode dead-letter events while ``broken`` is set: a failing DLQ."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.refused = 0

    def encode(self, event: Event) -> bytes:
        if self.broken and event.topic.endswith(".DLQ"):
            self.refused += 1
            raise EncodeError("dead-letter topic is unavailable (test switch)")
        return super().encode(event)


def _break_record_writes(bus: EventBus, switch: _SwitchableDLQCodec) -> None:
    """Make the bus's record writes to dead-letter topics fail while ``switch.broken``."""
    write = getattr(bus, "_send_raw", None)
    if write is None:
        return

    async def switched(topic: str, data: bytes, key: str | None, headers: Any) -> None:
        if switch.broken and topic.endswith(".DLQ"):
            switch.refused += 1
            raise EncodeError("dead-letter topic is unavailable (test switch)")
        await write(topic, data, key, headers)

    setattr(bus, "_send_raw", switched)  # noqa: B010 - an instance attribute, for this bus only


class ConformanceSuite(
    ReadingConformance,
    PatternConformance,
    DelayConformance,
    BatchConformance,
    DeadLetterConformance,
):
    """The contract of :class:`~dotmac.events.bus.EventBus`, run against a real transport."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    @pytest.fixture
    async def new_bus(self, bus_factory: BusFactory) -> AsyncIterator[BusFactory]:
        created: list[EventBus] = []

        async def make(*, codec: Codec | None = None, observer: Observer | None = None) -> EventBus:
            bus = await bus_factory(codec=codec, observer=observer or NoopObserver())
            created.append(bus)
            return bus

        yield make
        await asyncio.gather(*(bus.close(timeout=5.0) for bus in created))

    async def _collect_dlq(self, bus: EventBus, dlq_topic: str) -> list[DLQEntry]:
        entries: list[DLQEntry] = []

        async def keep(entry: DLQEntry) -> None:
            entries.append(entry)

        await create_dlq_consumer(bus, dlq_topic, keep, group=f"dlq-{uuid.uuid4().hex[:6]}")
        return entries

    # --- publishing and delivery ----------------------------------------------------------

    async def test_round_trip_every_field(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("roundtrip")
        received: list[Event] = []

        async def handler(event: Event) -> None:
            received.append(event)

        await bus.subscribe(topic, handler, group="g")
        sent = [
            Event(
                topic,
                {"n": i, "name": "Zoë 😀", "nested": {"list": [1, 2.5, None, True, "x"]}},
                key=f"key-{i % 7}",
                headers={"source": "conformance", "n": str(i)},
                tenant_id=f"tenant-{i % 3}",
                metadata=EventMetadata(
                    correlation_id=f"c{i}",
                    causation_id="cause",
                    producer="suite",
                    schema_version="2",
                ),
                timestamp=datetime(2026, 1, 2, 3, 4, 5, i, tzinfo=UTC),
            )
            for i in range(100)
        ]
        for event in sent:
            await bus.publish(event)
        await wait_until(lambda: len(received) >= 100, self.capabilities.timeout, "100 events")
        by_id = {e.id: e for e in received}
        assert len(by_id) == 100
        for event in sent:
            got = by_id[event.id]
            assert got == event
            assert (got.topic, got.payload, got.key, dict(got.headers), got.tenant_id) == (
                event.topic,
                event.payload,
                event.key,
                dict(event.headers),
                event.tenant_id,
            )
            assert got.metadata == event.metadata and got.timestamp == event.timestamp
            assert got.delivery is not None and got.delivery.count == 1

    async def test_concurrent_publishers_lose_and_duplicate_nothing(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus()
        topic = _topic("publishers")
        seen: Counter[str] = Counter()

        async def handler(event: Event) -> None:
            seen[event.payload["id"]] += 1

        await bus.subscribe(topic, handler, group="g", concurrency=8)

        async def publisher(p: int) -> None:
            for i in range(100):
                await bus.publish(Event(topic, {"id": f"{p}-{i}"}, key=f"p{p}"))

        await asyncio.gather(*(publisher(p) for p in range(50)))
        await wait_until(lambda: len(seen) >= 5000, self.capabilities.timeout * 2, "5000 events")
        await asyncio.sleep(0.2)
        assert len(seen) == 5000
        assert max(seen.values()) == 1

    async def test_publish_many(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("many")
        seen: list[int] = []

        async def handler(event: Event) -> None:
            seen.append(event.payload)

        await bus.subscribe(topic, handler, group="g")
        await bus.publish_many([Event(topic, i, key="same") for i in range(50)])
        await wait_until(lambda: len(seen) >= 50, self.capabilities.timeout, "50 events")
        assert seen == list(range(50))

    async def test_topics_are_isolated(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topics = [_topic(f"iso{i}") for i in range(20)]
        seen: dict[str, list[str]] = {t: [] for t in topics}

        def handler_for(topic: str) -> Callable[[Event], Awaitable[None]]:
            async def handler(event: Event) -> None:
                seen[topic].append(event.payload["from"])

            return handler

        for topic in topics:
            await bus.subscribe(topic, handler_for(topic), group="g")
        for round_ in range(5):
            for topic in topics:
                await bus.publish(Event(topic, {"from": topic, "round": round_}))
        await wait_until(
            lambda: all(len(v) >= 5 for v in seen.values()), self.capabilities.timeout, "topics"
        )
        await asyncio.sleep(0.2)
        for topic, sources in seen.items():
            assert sources == [topic] * 5

    async def test_handler_error_redelivers_with_count(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("redeliver")
        counts: list[int] = []

        async def handler(event: Event) -> None:
            assert event.delivery is not None
            counts.append(event.delivery.count)
            if event.delivery.count < 3:
                raise RuntimeError("transient")

        await bus.subscribe(topic, handler, group="g")
        await bus.publish(Event(topic, {"x": 1}))
        await wait_until(lambda: len(counts) >= 3, self.capabilities.timeout, "3 deliveries")
        await asyncio.sleep(0.3)
        assert counts == [1, 2, 3]

    async def test_fan_out_to_every_group(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("fanout")
        got: dict[str, list[int]] = {"a": [], "b": [], "private": []}

        def handler_for(name: str) -> Callable[[Event], Awaitable[None]]:
            async def handler(event: Event) -> None:
                got[name].append(event.payload)

            return handler

        await bus.subscribe(topic, handler_for("a"), group="group-a")
        await bus.subscribe(topic, handler_for("b"), group="group-b")
        await bus.subscribe(topic, handler_for("private"))
        for i in range(30):
            await bus.publish(Event(topic, i, key="k"))
        await wait_until(
            lambda: all(len(v) >= 30 for v in got.values()), self.capabilities.timeout, "fan-out"
        )
        await asyncio.sleep(0.2)
        assert got["a"] == got["b"] == got["private"] == list(range(30))

    async def test_competing_consumers_share_without_duplicates(self, new_bus: BusFactory) -> None:
        bus_a, bus_b = await new_bus(), await new_bus()
        topic = _topic("compete")
        got: dict[str, list[int]] = {"a": [], "b": []}

        def handler_for(name: str) -> Callable[[Event], Awaitable[None]]:
            async def handler(event: Event) -> None:
                got[name].append(event.payload)
                await asyncio.sleep(0.002)

            return handler

        await bus_a.subscribe(topic, handler_for("a"), group="workers")
        await bus_b.subscribe(topic, handler_for("b"), group="workers")
        for i in range(200):
            await bus_a.publish(Event(topic, i, key=f"k{i}"))
        await wait_until(
            lambda: len(got["a"]) + len(got["b"]) >= 200, self.capabilities.timeout, "200 events"
        )
        await asyncio.sleep(0.3)
        everything = got["a"] + got["b"]
        assert sorted(everything) == list(range(200)), "lost or duplicated"
        assert got["a"] and got["b"], "one consumer got nothing"

    @pytest.mark.parametrize("concurrency", [1, 4])
    async def test_per_key_order(self, new_bus: BusFactory, concurrency: int) -> None:
        bus = await new_bus()
        topic = _topic("order")
        seen: dict[str, list[int]] = {f"key-{k}": [] for k in range(3)}

        async def handler(event: Event) -> None:
            await asyncio.sleep(0.001 * (event.payload["seq"] % 3))
            seen[event.key or ""].append(event.payload["seq"])

        await bus.subscribe(topic, handler, group="g", concurrency=concurrency)
        for seq in range(60):
            for key in seen:
                await bus.publish(Event(topic, {"seq": seq}, key=key))
        await wait_until(
            lambda: all(len(v) >= 60 for v in seen.values()), self.capabilities.timeout, "order"
        )
        for order in seen.values():
            assert order == list(range(60))

    async def test_concurrency_runs_n_handlers_at_once(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("parallel")
        running = 0
        peak = 0
        done = 0

        async def handler(event: Event) -> None:
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            done += 1

        await bus.subscribe(topic, handler, group="g", concurrency=5)
        await bus.publish_many([Event(topic, i) for i in range(25)])
        await wait_until(lambda: done >= 25, self.capabilities.timeout, "25 handled")
        assert peak == 5

    # --- groups across consumers coming and going ---------------------------------------------

    async def test_consumer_closed_mid_stream_loses_nothing(self, new_bus: BusFactory) -> None:
        bus_a, bus_b = await new_bus(), await new_bus()
        topic = _topic("handoff")
        handled: Counter[int] = Counter()

        async def slow(event: Event) -> None:
            await asyncio.sleep(0.01)
            handled[event.payload] += 1

        first = await bus_a.subscribe(topic, slow, group="g", concurrency=2)
        await bus_a.publish_many([Event(topic, i) for i in range(100)])
        await wait_until(lambda: len(handled) >= 20, self.capabilities.timeout, "20 handled")
        await first.close(timeout=5.0)
        assert first.closed
        await bus_b.subscribe(topic, slow, group="g", concurrency=2)
        await wait_until(
            lambda: len(handled) >= 100,
            self.capabilities.timeout + self.capabilities.handoff_timeout,
            "the rest to reach the next consumer",
        )
        assert set(handled) == set(range(100))

    async def test_group_rejoining_gets_what_it_missed(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("rejoin")
        got: list[int] = []

        async def handler(event: Event) -> None:
            got.append(event.payload)

        first = await bus.subscribe(topic, handler, group="durable")
        await bus.publish(Event(topic, -1))
        await wait_until(lambda: got == [-1], self.capabilities.timeout, "first event")
        await first.close()
        for i in range(20):
            await bus.publish(Event(topic, i, key="k"))
        await asyncio.sleep(0.1)
        assert got == [-1]
        await bus.subscribe(topic, handler, group="durable")
        await wait_until(lambda: len(got) >= 21, self.capabilities.timeout, "missed events")
        assert got == [-1, *range(20)]

    # --- run_consumer, retries and dead letters ---------------------------------------------

    async def test_run_consumer_retry_then_success(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("retry")
        dlq = await self._collect_dlq(bus, f"{topic}.DLQ")
        counts: list[int] = []

        async def flaky(event: Event) -> None:
            counts.append(event.delivery_count)
            if event.delivery_count < 3:
                raise ConnectionError("try again")

        await run_consumer(bus, topic, flaky, FAST_RETRIES, group="g")
        await bus.publish(Event(topic, {"x": 1}))
        await wait_until(lambda: len(counts) >= 3, self.capabilities.timeout, "3 attempts")
        await asyncio.sleep(0.3)
        assert counts == [1, 2, 3]
        assert dlq == []

    async def test_retries_exhausted_go_to_dlq_once(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("exhaust")
        dlq = await self._collect_dlq(bus, f"{topic}.DLQ")
        calls = 0

        async def always_fails(event: Event) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError(f"failure {calls}")

        await run_consumer(bus, topic, always_fails, FAST_RETRIES, group="g")
        original = Event(topic, {"order": 7}, key="o-7", tenant_id="acme")
        await bus.publish(original)
        await wait_until(lambda: len(dlq) >= 1, self.capabilities.timeout, "a dead letter")
        await asyncio.sleep(0.3)
        assert calls == 3
        assert len(dlq) == 1
        entry = dlq[0]
        assert entry.attempts == 3 and entry.retry_count == 2
        assert entry.original_topic == topic and entry.group == "g"
        assert entry.error_type == "RuntimeError" and entry.error == "failure 3"
        assert entry.original_event == original
        assert entry.original_event is not None and entry.original_event.tenant_id == "acme"
        assert entry.first_failure_at <= entry.last_failure_at

    async def test_non_retryable_goes_to_dlq_at_once(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("nonretry")
        dlq = await self._collect_dlq(bus, "custom.failed.DLQ")
        calls: Counter[str] = Counter()

        async def handler(event: Event) -> None:
            calls[event.payload] += 1
            if event.payload == "reject":
                raise Reject("not for us")
            raise ValueError("bad data")

        options = ConsumerOptions(
            max_retries=5,
            backoff_base_ms=10,
            retry_on_exceptions=(ConnectionError,),
            dlq_topic="custom.failed.DLQ",
        )
        await run_consumer(bus, topic, handler, options, group="g")
        await bus.publish(Event(topic, "value-error"))
        await bus.publish(Event(topic, "reject"))
        await wait_until(lambda: len(dlq) >= 2, self.capabilities.timeout, "2 dead letters")
        await asyncio.sleep(0.2)
        assert calls == {"value-error": 1, "reject": 1}
        assert sorted(e.error_type for e in dlq) == ["Reject", "ValueError"]
        assert all(e.attempts == 1 for e in dlq)

    async def test_undecodable_message_goes_to_dlq_and_consumer_continues(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus(codec=PoisonCodec())
        topic = _topic("poison")
        dlq = await self._collect_dlq(bus, f"{topic}.DLQ")
        good: list[int] = []

        async def handler(event: Event) -> None:
            good.append(event.payload["n"])

        await bus.subscribe(topic, handler, group="g")
        for payload in ({"n": 1}, {"poison": True}, {"n": 2}):  # one key: one partition, in order
            await bus.publish(Event(topic, payload, key="same"))
        await wait_until(lambda: len(good) >= 2 and len(dlq) >= 1, self.capabilities.timeout, "dlq")
        assert good == [1, 2]
        assert dlq[0].error_type == "DecodeError" and "poison" in dlq[0].error
        assert dlq[0].original_event is not None  # a plain JsonCodec reads it fine

    async def test_failing_dlq_publish_loses_nothing(self, new_bus: BusFactory) -> None:
        codec = _SwitchableDLQCodec()
        bus = await new_bus(codec=codec)
        topic = _topic("dlqdown")
        calls = 0

        async def always_fails(event: Event) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("boom")

        options = ConsumerOptions(max_retries=0, backoff_base_ms=20, jitter=False)
        _break_record_writes(bus, codec)  # dead letters written as records fail the same way
        await run_consumer(bus, topic, always_fails, options, group="g")
        await bus.publish(Event(topic, {"keep": "me"}))
        await wait_until(lambda: codec.refused >= 2, self.capabilities.timeout, "failed DLQ sends")
        codec.broken = False
        dlq = await self._collect_dlq(bus, f"{topic}.DLQ")
        await wait_until(lambda: len(dlq) >= 1, self.capabilities.timeout, "the dead letter")
        await asyncio.sleep(0.3)
        assert len(dlq) == 1
        assert dlq[0].original_event is not None
        assert dlq[0].original_event.payload == {"keep": "me"}
        assert calls == 1, "a failed dead-letter publish must not call the handler again"
        assert dlq[0].attempts == 1 and dlq[0].error == "boom"

    # --- lifecycle and request-reply ------------------------------------------------------------

    async def test_publish_after_close_raises(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("closed")

        async def handler(event: Event) -> None:
            return None

        await bus.close()
        await bus.close()  # idempotent
        with pytest.raises(BusClosedError):
            await bus.publish(Event(topic, {}))
        with pytest.raises(RuntimeError):
            await bus.publish_many([Event(topic, {})])
        with pytest.raises(BusClosedError):
            await bus.subscribe(topic, handler)

    async def test_close_waits_for_running_handler_and_acks_it(self, new_bus: BusFactory) -> None:
        bus_a, bus_b = await new_bus(), await new_bus()
        topic = _topic("drain")
        started = asyncio.Event()
        finished: list[int] = []
        later: list[int] = []

        async def slow(event: Event) -> None:
            started.set()
            await asyncio.sleep(0.3)
            finished.append(event.payload)

        async def record(event: Event) -> None:
            later.append(event.payload)

        subscription: Subscription = await bus_a.subscribe(topic, slow, group="g")
        await bus_a.publish(Event(topic, 1))
        await asyncio.wait_for(started.wait(), self.capabilities.timeout)
        await subscription.close(timeout=5.0)
        assert finished == [1]
        await bus_b.subscribe(topic, record, group="g")
        await bus_b.publish(Event(topic, 2))
        await wait_until(lambda: 2 in later, self.capabilities.timeout, "next event")
        await asyncio.sleep(0.3)
        assert later == [2], "a handled message was delivered again after close"

    async def test_request_reply(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _topic("rpc")
        if not self.capabilities.request_reply:
            with pytest.raises(UnsupportedOperation):
                await bus.request(topic, {"numbers": [1]}, timeout=1.0)
            return

        async def add(event: Event) -> Any:
            return {"result": sum(event.payload["numbers"])}

        await bus.subscribe(topic, add)
        reply = await bus.request(
            topic, {"numbers": [1, 2, 3, 4, 5]}, timeout=self.capabilities.timeout
        )
        assert reply == {"result": 15}
        with pytest.raises(RequestTimeout):
            await bus.request(_topic("nobody"), {"numbers": []}, timeout=0.2)
