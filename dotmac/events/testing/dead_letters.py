"""Conformance tests for dead letters as records any client can read, and operating them.

Part of :class:`~dotmac.events.testing.ConformanceSuite`. A dead letter must be the original
record (bytes, key) plus the failure headers of :mod:`dotmac.events.dlq.headers`, read back by
``read_records`` with those headers; :class:`~dotmac.events.dlq.DeadLetters` counts, lists,
replays (marked, once per entry) and purges. A transport that cannot delete one record sets
``Capabilities(delete_records=False)`` (Kafka) and must then refuse it with
UnsupportedOperation while deleting everything still works.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import ClassVar

import pytest

import dotmac.events.dlq.headers as h
from dotmac.events.bus import EventBus, ReadRecord
from dotmac.events.consumer import ConsumerOptions, run_consumer
from dotmac.events.dlq import DeadLetters
from dotmac.events.errors import (
    ConfigurationError,
    EventBusError,
    Reject,
    UnsupportedOperation,
)
from dotmac.events.event import Event, EventMetadata
from dotmac.events.testing.support import BusFactory, Capabilities, wait_until

__all__ = ["DeadLetterConformance"]


class PaymentDeclined(Exception):
    """An application error, to see its full class name in the headers."""


def _root() -> str:
    return f"dl{uuid.uuid4().hex[:10]}"


async def _records(bus: EventBus, topic: str) -> list[ReadRecord]:
    return [r async for r in bus.read_records(topic)]


class DeadLetterConformance:
    """Dead letters: the record format, and count / list / get / replay / purge."""

    capabilities: ClassVar[Capabilities]

    async def _fail(self, bus: EventBus, topic: str, errors: dict[int, Exception]) -> None:
        """Subscribe a handler that raises ``errors[payload n]`` (none: handled)."""

        async def handler(event: Event) -> None:
            error = errors.get(event.payload["n"])
            if error is not None:
                raise error

        options = ConsumerOptions(max_retries=1, backoff_base_ms=10, jitter=False)
        await run_consumer(bus, topic, handler, options, group="workers")

    async def _dead(self, bus: EventBus, dlq: str, count: int) -> list[ReadRecord]:
        held: list[ReadRecord] = []

        async def enough() -> bool:
            held[:] = await _records(bus, dlq)
            return len(held) >= count

        await wait_until(enough, self.capabilities.timeout, f"{count} dead letters on {dlq}")
        return held

    async def test_a_dead_letter_is_the_original_record_with_failure_headers(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus()
        topic = _root()
        await self._fail(bus, topic, {1: PaymentDeclined("card declined " + "x" * 5000)})
        original = Event(
            topic,
            {"n": 1, "name": "Zoë"},
            key="cust-7",
            headers={"source": "shop"},
            tenant_id="acme",
            metadata=EventMetadata(correlation_id="c-1"),
        )
        await bus.publish(original)
        (record,) = await self._dead(bus, f"{topic}.DLQ", 1)
        assert record.event == original  # the same event: not a wrapper around it
        assert record.key == "cust-7"
        found = h.header_map(record.headers)
        assert found[h.ORIGINAL_TOPIC] == topic
        assert found[h.ORIGINAL_CONSUMER_GROUP] == "workers"
        assert found[h.EXCEPTION_FQCN] == f"{__name__}.PaymentDeclined"
        assert found[h.EXCEPTION_MESSAGE].startswith("card declined xxx")
        assert len(found[h.EXCEPTION_MESSAGE]) == h.MAX_MESSAGE_LENGTH
        assert found[h.ATTEMPTS] == "2"
        assert found[h.FIRST_FAILURE_AT] <= found[h.LAST_FAILURE_AT]
        assert found[h.ORIGINAL_ID]

        entry = (await DeadLetters(bus, f"{topic}.DLQ").list())[0]
        assert entry.original_event == original
        assert (entry.original_topic, entry.group, entry.error_type) == (
            topic,
            "workers",
            "PaymentDeclined",
        )
        assert entry.attempts == 2 and entry.retry_count == 1
        assert entry.id == record.position

    async def test_dead_letters_are_counted_listed_and_shown_without_consuming(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus()
        first, second = _root(), _root()
        dlq = f"{first}.shared.DLQ"
        options = ConsumerOptions(max_retries=0, dlq_topic=dlq)

        async def handler(event: Event) -> None:
            if event.payload["n"] % 2:
                raise Reject(f"odd {event.payload['n']}")
            raise ValueError(f"even {event.payload['n']}")

        await run_consumer(bus, first, handler, options, group="workers")
        await run_consumer(bus, second, handler, options, group="workers")
        for n in range(3):
            await bus.publish(Event(first, {"n": n}))
            await self._dead(bus, dlq, n + 1)  # one at a time: a known order
        await bus.publish(Event(second, {"n": 3}))
        await self._dead(bus, dlq, 4)

        view = DeadLetters(bus, dlq)
        assert await view.count() == 4
        newest = await view.list()
        assert [e.original_event.payload["n"] for e in newest if e.original_event] == [3, 2, 1, 0]
        assert [
            e.original_event.payload["n"] for e in await view.list(limit=2) if e.original_event
        ] == [3, 2]
        assert await view.count(error_type="Reject") == 2
        assert await view.count(error_type="ValueError", original_topic=first) == 2
        assert await view.count(original_topic=second) == 1
        stamps = [e.timestamp for e in newest]
        if stamps[-1] is not None:  # the transport knows when it stored them
            assert await view.count(since=stamps[-1]) == 4
        shown = await view.get(newest[1].id or "")
        assert shown.error == "even 2"
        with pytest.raises(ConfigurationError, match="entry_id"):
            await view.get("999999999-0" if ":" not in (newest[0].id or "") else "0:999999")
        assert await DeadLetters(bus, dlq).count() == 4  # reading consumed nothing

    async def test_replay_marks_the_record_and_happens_once_per_entry(
        self, new_bus: BusFactory
    ) -> None:
        bus = await new_bus()
        topic = _root()
        fixed = asyncio.Event()
        seen: list[Event] = []

        async def handler(event: Event) -> None:
            if not fixed.is_set():
                raise Reject("not yet")
            seen.append(event)

        options = ConsumerOptions(max_retries=0)
        await run_consumer(bus, topic, handler, options, group="workers")
        sent = [Event(topic, {"n": n}, key=f"k{n}") for n in range(3)]
        for event in sent:
            await bus.publish(event)
        await self._dead(bus, f"{topic}.DLQ", 3)
        view = DeadLetters(bus, f"{topic}.DLQ")
        entries = await view.list()
        fixed.set()

        calls: list[tuple[int, int]] = []
        report = await view.replay(
            [entries[0].id or ""], progress=lambda d, t: calls.append((d, t))
        )
        assert report.replayed == [entries[0].id] and calls == [(1, 1)]

        async def one() -> bool:
            return len(seen) == 1

        await wait_until(one, self.capabilities.timeout, "the replayed event")
        assert seen[0].id == entries[0].original_event.id if entries[0].original_event else False
        assert seen[0].key == entries[0].original_key
        assert seen[0].headers[h.REPLAYED_FROM] == f"{topic}.DLQ@{entries[0].id}"
        assert seen[0].headers[h.REPLAY_ID] == report.replay_id
        assert h.ORIGINAL_TOPIC not in seen[0].headers

        again = await view.replay(rate=50.0)  # everything: the first entry is skipped
        assert again.skipped == [entries[0].id]
        assert sorted(again.replayed) == sorted(e.id or "" for e in entries[1:])

        async def three() -> bool:
            return len(seen) == 3

        await wait_until(three, self.capabilities.timeout, "three replayed events")
        assert sorted(e.payload["n"] for e in seen) == [0, 1, 2]
        assert all(e.replayed_at is not None for e in await view.list())
        with pytest.raises(ConfigurationError, match="rate"):
            await view.replay(rate=0)
        with pytest.raises(ConfigurationError, match="ids"):
            await view.replay(["no-such-entry"])

    async def test_purge(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        topic = _root()
        await self._fail(bus, topic, {n: Reject("no") for n in range(3)})
        for n in range(3):
            await bus.publish(Event(topic, {"n": n}))
        await self._dead(bus, f"{topic}.DLQ", 3)
        view = DeadLetters(bus, f"{topic}.DLQ")
        entries = await view.list()
        if self.capabilities.delete_records:
            assert await view.purge([entries[0].id or ""]) == 1
            assert [e.id for e in await view.list()] == [e.id for e in entries[1:]]
        else:
            with pytest.raises(UnsupportedOperation, match="single records"):
                await view.purge([entries[0].id or ""])
            assert await view.count() == 3
        if not self.capabilities.purge_all:
            with pytest.raises(EventBusError):
                await view.purge()
            assert await view.count() == 3
            return
        await view.purge()
        assert await view.count() == 0
        await bus.publish(Event(topic, {"n": 1}))  # the topic still works after a purge
        await self._dead(bus, f"{topic}.DLQ", 1)
        assert await view.count() == 1
