"""Dead letters: DLQEntry round trips, replay, SimpleDLQ and the logging handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dotmac.events import (
    ConsumerOptions,
    DecodeError,
    DLQEntry,
    Event,
    EventMetadata,
    JsonCodec,
    Reject,
    SimpleDLQ,
    UnsupportedOperation,
    alert_on_dlq_entry,
    create_dlq_consumer,
    create_memory_bus,
    log_dlq_entry,
    run_consumer,
)
from dotmac.events.dlq.headers import REPLAY_ID
from dotmac.events.testing import wait_until

CODEC = JsonCodec()
FIRST = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def _original() -> Event:
    return Event(
        "orders",
        {"order": 7, "name": "Zoë"},
        key="cust-1",
        headers={"h": "v"},
        tenant_id="acme",
        metadata=EventMetadata(correlation_id="c-1"),
    )


def _entry(event: Event | None, data: bytes, **overrides: Any) -> DLQEntry:
    fields: dict[str, Any] = {
        "original_topic": "orders",
        "group": "billing",
        "error": "card declined",
        "error_type": "PaymentError",
        "attempts": 4,
        "first_failure_at": FIRST,
        "last_failure_at": FIRST + timedelta(seconds=3, microseconds=7),
        "original_data": data,
        "original_event": event,
        "original_key": event.key if event else None,
    }
    fields.update(overrides)
    return DLQEntry(**fields)


def test_to_event_and_back_keeps_everything_and_the_original_bytes() -> None:
    original = _original()
    data = CODEC.encode(original)
    entry = _entry(original, data)
    dlq_event = entry.to_event("orders.DLQ")
    assert dlq_event.topic == "orders.DLQ"
    assert dlq_event.key == "cust-1"
    assert dlq_event.tenant_id == "acme"
    assert dict(dlq_event.headers) == {"dotmac-dlq-original-topic": "orders"}  # old format

    # through the codec, as it travels on a bus
    back = DLQEntry.from_event(CODEC.decode(CODEC.encode(dlq_event)))
    assert back.original_data == data  # byte-exact
    assert back.original_event == original
    assert back.original_event is not None and back.original_event.id == original.id
    assert back.original_event.timestamp == original.timestamp
    assert (back.original_topic, back.group, back.error, back.error_type) == (
        "orders",
        "billing",
        "card declined",
        "PaymentError",
    )
    assert back.attempts == 4 and back.retry_count == 3
    assert back.first_failure_at == entry.first_failure_at
    assert back.last_failure_at == entry.last_failure_at
    assert back.original_key == "cust-1"
    assert back.id == str(dlq_event.id)


def test_undecodable_original_round_trips_as_bytes_without_an_event() -> None:
    garbage = b"\x00\xffnot an event\x80"
    entry = _entry(None, garbage, error_type="DecodeError", original_key="k9")
    back = DLQEntry.from_event(entry.to_event("orders.DLQ"))
    assert back.original_data == garbage
    assert back.original_event is None
    assert back.original_key == "k9"
    assert back.error_type == "DecodeError"


def test_from_event_uses_the_given_codec_for_the_original() -> None:
    def reject_all(topic: str, payload: Any) -> None:
        raise ValueError("schema changed")

    data = CODEC.encode(_original())
    dlq_event = _entry(_original(), data).to_event("orders.DLQ")
    strict = JsonCodec.with_schema_validation(reject_all)
    back = DLQEntry.from_event(dlq_event, strict)
    assert back.original_event is None
    assert back.original_data == data


@pytest.mark.parametrize(
    "payload",
    [None, "text", [1], {"original_topic": "x"}, {"original_data": "!!!not base64"}],
)
def test_from_event_rejects_what_is_not_a_dead_letter(payload: Any) -> None:
    with pytest.raises(DecodeError, match="not a dead-letter entry"):
        DLQEntry.from_event(Event("x.DLQ", payload))


def test_for_failure_records_the_error() -> None:
    original = _original()
    entry = DLQEntry.for_failure(
        topic="orders",
        group="g",
        data=CODEC.encode(original),
        error=Reject(),
        attempts=1,
        first_failure_at=None,
        event=original,
        key=None,
    )
    assert entry.error == "Reject()"  # an empty message still says something
    assert entry.error_type == "Reject"
    assert entry.first_failure_at == entry.last_failure_at
    assert entry.original_key == "cust-1"
    assert entry.retry_count == 0


async def test_replay_republishes_the_event_marked_as_a_replay() -> None:
    bus = create_memory_bus()
    got: asyncio.Queue[Event] = asyncio.Queue()

    async def handler(event: Event) -> None:
        await got.put(event)

    try:
        await bus.subscribe("orders", handler)
        original = _original()
        entry = _entry(original, CODEC.encode(original))
        await entry.replay(bus)
        await entry.replay(bus)
        first, second = [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
        replay_ids = {first.headers[REPLAY_ID], second.headers[REPLAY_ID]}
        assert len(replay_ids) == 2  # each replay its own id
        assert first == original.with_headers({REPLAY_ID: first.headers[REPLAY_ID]})
        assert first.id == second.id == original.id
        assert first.timestamp == original.timestamp
    finally:
        await bus.close()


async def test_replay_refuses_undecodable_originals() -> None:
    bus = create_memory_bus()
    try:
        entry = _entry(None, b"garbage", id="entry-1", error="bad bytes")
        with pytest.raises(UnsupportedOperation, match=r"entry-1 holds undecodable bytes"):
            await entry.replay(bus)
        assert bus.history("orders") == []
    finally:
        await bus.close()


async def test_undecodable_message_is_dead_lettered_with_its_bytes() -> None:
    """A message the codec cannot read goes to the DLQ at once, bytes intact."""

    def no_negatives(topic: str, payload: Any) -> None:
        if topic == "nums" and payload["n"] < 0:
            raise ValueError("n < 0")

    bus = create_memory_bus(codec=JsonCodec.with_schema_validation(no_negatives))
    entries: list[DLQEntry] = []
    calls: list[Event] = []

    async def handler(event: Event) -> None:
        calls.append(event)

    async def on_dead(entry: DLQEntry) -> None:
        entries.append(entry)

    try:
        await bus.subscribe("nums", handler, group="g")
        await create_dlq_consumer(bus, "nums.DLQ", on_dead)
        bad = Event("nums", {"n": -1})
        raw = JsonCodec().encode(bad)
        await bus._send([(bad, raw)])  # as a producer without the validator would
        await wait_until(lambda: len(entries) == 1, 5, "the dead letter")
        assert calls == []
        assert entries[0].original_data == raw
        # read back without the validator, so it can be replayed once the data is fixed
        assert entries[0].original_event == bad
        assert entries[0].error_type == "DecodeError"
        assert "schema validation failed" in entries[0].error
        assert entries[0].attempts == 1
    finally:
        await bus.close()


async def _dead_letter(bus: Any, count: int, fixed: asyncio.Event | None = None) -> list[Event]:
    """Publish ``count`` events to "jobs" whose handler rejects them until ``fixed`` is set."""

    async def handler(event: Event) -> None:
        if fixed is None or not fixed.is_set():
            raise Reject(f"job {event.payload['i']} is invalid")

    await run_consumer(bus, "jobs", handler, ConsumerOptions(max_retries=0), group="workers")
    events = [Event("jobs", {"i": i}, key=f"k{i}") for i in range(count)]
    for event in events:
        await bus.publish(event)
    return events


async def test_simple_dlq_lists_replays_and_removes() -> None:
    bus = create_memory_bus()
    try:
        fixed = asyncio.Event()
        await _dead_letter(bus, 3, fixed)
        dlq = await SimpleDLQ(bus, "jobs.DLQ").start()
        assert await dlq.start() is dlq  # starting twice is harmless
        held: list[DLQEntry] = []

        async def three() -> bool:
            held[:] = await dlq.entries()
            return len(held) == 3

        for _ in range(500):
            if await three():
                break
            await asyncio.sleep(0.01)
        entries = held
        assert sorted(e.original_event.payload["i"] for e in entries if e.original_event) == [
            0,
            1,
            2,
        ]
        assert all(e.error_type == "Reject" and e.attempts == 1 for e in entries)
        assert [e.last_failure_at for e in entries] == sorted(e.last_failure_at for e in entries)
        # a second view (another process, after a restart) sees the same: nothing was consumed
        assert [e.id for e in await SimpleDLQ(bus, "jobs.DLQ").entries()] == [e.id for e in entries]

        replayed: asyncio.Queue[Event] = asyncio.Queue()

        async def capture(event: Event) -> None:
            await replayed.put(event)

        await bus.subscribe("jobs", capture)  # a private group: sees only what comes next

        fixed.set()  # the bug is fixed: the workers now handle what is replayed
        target = entries[0]
        assert target.id is not None and target.original_event is not None
        await dlq.replay(target.id)
        again = await asyncio.wait_for(replayed.get(), 5)
        assert again.id == target.original_event.id
        assert again.payload == target.original_event.payload
        assert again.headers["dotmac-replayed-from"] == f"jobs.DLQ@{target.id}"
        await asyncio.sleep(0.05)
        assert replayed.empty()
        assert len(await dlq.entries()) == 2  # replayed entries are no longer listed
        assert target.id not in {e.id for e in await dlq.entries()}

        removed = await dlq.remove(entries[1].id or "")
        assert removed.id == entries[1].id
        assert [e.id for e in await dlq.entries()] == [entries[2].id]
        with pytest.raises(KeyError):
            await dlq.remove(entries[1].id or "")
        with pytest.raises(KeyError):
            await dlq.replay("no-such-entry")
        await dlq.close()
    finally:
        await bus.close()


async def test_create_dlq_consumer_acks_only_after_the_handler_returned() -> None:
    bus = create_memory_bus()
    attempts: list[int] = []
    done = asyncio.Event()

    async def flaky(entry: DLQEntry) -> None:
        attempts.append(entry.attempts)
        if len(attempts) == 1:
            raise RuntimeError("database down")
        done.set()

    try:
        await _dead_letter(bus, 1)
        await create_dlq_consumer(bus, "jobs.DLQ", flaky, group="dlq-processor")
        await asyncio.wait_for(done.wait(), 5)
        assert attempts == [1, 1]  # the same entry came back after the handler failed
    finally:
        await bus.close()


HandlerFn = Callable[[DLQEntry], Awaitable[None]]


@pytest.mark.parametrize(
    ("handler", "level", "words"),
    [
        (log_dlq_entry, logging.WARNING, ["orders", "billing", "4 attempt", "PaymentError"]),
        (alert_on_dlq_entry, logging.ERROR, ["ALERT", "orders", "PaymentError", "acme"]),
    ],
)
async def test_logging_handlers(
    caplog: pytest.LogCaptureFixture, handler: HandlerFn, level: int, words: list[str]
) -> None:
    original = _original()
    caplog.set_level(logging.DEBUG, logger="dotmac.events.dlq")
    await handler(_entry(original, CODEC.encode(original)))
    records = [r for r in caplog.records if r.name == "dotmac.events.dlq"]
    assert len(records) == 1
    assert records[0].levelno == level
    message = records[0].getMessage()
    assert all(word in message for word in words), message
    assert "card declined" in message


async def test_alert_on_undecodable_entry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="dotmac.events.dlq")
    await alert_on_dlq_entry(_entry(None, b"\x00", error_type="DecodeError"))
    assert "undecodable" in caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.ERROR
