"""Dead letters on NATS JetStream: replays inside the duplicate window are delivered, header
values survive the trip through NATS headers, and deleting records that are not there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dotmac.events import ConsumerOptions, Event, NatsConfig, Reject, create_nats_bus, run_consumer
from dotmac.events.adapters.nats import NatsJetStreamBus
from dotmac.events.adapters.nats.records import header_bytes, header_value
from dotmac.events.dlq import DeadLetters
from dotmac.events.dlq import headers as h
from dotmac.events.errors import ConfigurationError
from dotmac.events.testing import wait_until

pytestmark = pytest.mark.nats


@pytest.fixture
async def bus(nats_url: str, nats_prefixes: tuple[str, str]) -> AsyncIterator[NatsJetStreamBus]:
    stream_prefix, subject_prefix = nats_prefixes
    config = NatsConfig(
        servers=nats_url,
        stream_prefix=stream_prefix,
        subject_prefix=subject_prefix,
        fetch_wait=0.5,
        duplicate_window=600.0,  # every replay below happens well inside it
    )
    created = create_nats_bus(config)
    yield created
    await created.close(timeout=5.0)


async def test_replays_within_the_duplicate_window_are_delivered(bus: NatsJetStreamBus) -> None:
    topic = "orders"
    fixed = asyncio.Event()
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        if not fixed.is_set():
            raise Reject("not yet")
        seen.append(event)

    await run_consumer(bus, topic, handler, ConsumerOptions(max_retries=0), group="billing")
    original = Event(topic, {"order": 7}, key="cust-1")
    await bus.publish(original)
    view = DeadLetters(bus, f"{topic}.DLQ")
    deadline = asyncio.get_running_loop().time() + 15
    while await view.count() < 1:
        assert asyncio.get_running_loop().time() < deadline, "the dead letter"
        await asyncio.sleep(0.05)
    (entry,) = await view.list()
    fixed.set()

    await entry.replay(bus)  # DLQEntry.replay: publish, marked with a replay id
    await entry.replay(bus)  # again: a replay of its own, not a duplicate of the first
    await wait_until(lambda: len(seen) == 2, 15, "two replays through DLQEntry.replay")
    first = await view.replay([entry.id or ""])  # DeadLetters.replay: the record as it was
    await wait_until(lambda: len(seen) == 3, 15, "the replay through DeadLetters.replay")
    forced = await view.replay([entry.id or ""], force=True)
    await wait_until(lambda: len(seen) == 4, 15, "the forced replay")

    assert all(event.id == original.id and event.key == "cust-1" for event in seen)
    assert all(event.payload == {"order": 7} for event in seen)
    replay_ids = [event.headers[h.REPLAY_ID] for event in seen]
    assert replay_ids[2:] == [first.replay_id, forced.replay_id]
    assert len(set(replay_ids)) == 4
    assert seen[2].headers[h.REPLAYED_FROM] == f"{topic}.DLQ@{entry.id}"

    await bus.publish(original)  # a publisher's retry of the original is still dropped
    await asyncio.sleep(0.3)
    assert (await bus.stats(topic)).length == 5  # the original and four replays
    assert len(seen) == 4


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_a_header_value_is_one_line_nats_keeps_and_comes_back_as_it_was(value: bytes) -> None:
    text = header_value(value)
    assert header_bytes(text) == value
    assert text.isprintable() and text.strip() == text  # nats-py strips; no CR or LF
    try:
        readable = value.decode()
    except UnicodeDecodeError:
        return
    if readable.isprintable() and "%" not in readable and readable.strip(" ") == readable:
        assert text == readable  # as it is, when a header can hold it


async def test_header_values_survive_the_server(bus: NatsJetStreamBus) -> None:
    values = [
        b"",
        b"plain",
        b"  padded  ",
        b"line 1\r\nline 2",
        b"100% sure",
        b"%41 is not A",
        b"\xff\xfe binary",
        "Zoë\u3000".encode(),
    ]
    headers = [(f"x-{n}", value) for n, value in enumerate(values)]
    await bus.send_record("values", b"data", "k %", headers)
    (record,) = [r async for r in bus.read_records("values")]
    assert record.data == b"data" and record.key == "k %"
    assert list(record.headers) == headers


async def test_send_record_refuses_headers_nats_cannot_carry(bus: NatsJetStreamBus) -> None:
    for bad in [("bad name", b"v"), ("a:b", b"v"), ("", b"v"), ("Dotmac-Key", b"k")]:
        with pytest.raises(ConfigurationError, match="headers"):
            await bus.send_record("refused", b"data", None, [bad])
    with pytest.raises(ConfigurationError, match="must be bytes"):
        await bus.send_record("refused", b"data", None, [("name", "text")])  # type: ignore[list-item]
    assert (await bus.stats("refused")).length == 0


async def test_a_msg_id_given_by_the_caller_deduplicates(bus: NatsJetStreamBus) -> None:
    for _ in range(2):
        await bus.send_record("given", b"data", None, [("Nats-Msg-Id", b"once")])
    await bus.send_record("given", b"data")  # no id given: a write of its own
    await bus.send_record("given", b"data")
    assert (await bus.stats("given")).length == 3


async def test_purging_what_is_not_there(bus: NatsJetStreamBus) -> None:
    missing = DeadLetters(bus, "never.DLQ")
    assert await missing.purge(["1"]) == 0  # no stream at all
    assert await missing.purge() == 0
    for n in range(3):
        await bus.send_record("held.DLQ", b"%d" % n)
    held = DeadLetters(bus, "held.DLQ")  # not dead letters, but records all the same
    assert await held.purge(["2", "2", "0", "x", "99"]) == 1  # once, then nothing held there
    assert [r.position async for r in bus.read_records("held.DLQ")] == ["1", "3"]
    assert await held.purge() == 2
    assert [r async for r in bus.read_records("held.DLQ")] == []
