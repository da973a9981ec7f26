"""Interop with a raw nats-py client: it reads what the bus publishes (events, and dead letters as
the original message plus failure headers), and the bus reads what it publishes (our JSON
envelope), dead-lettering foreign bytes; a repeated event id is stored once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from dotmac.events import (
    ConsumerOptions,
    DLQEntry,
    Event,
    NatsConfig,
    Reject,
    create_nats_bus,
    run_consumer,
)
from dotmac.events.adapters.nats import NatsJetStreamBus
from dotmac.events.codec import JsonCodec
from dotmac.events.dlq import DeadLetters

pytestmark = pytest.mark.nats


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
async def bus(nats_url: str, nats_prefixes: tuple[str, str]) -> AsyncIterator[NatsJetStreamBus]:
    stream_prefix, subject_prefix = nats_prefixes
    config = NatsConfig(
        servers=nats_url, stream_prefix=stream_prefix, subject_prefix=subject_prefix, fetch_wait=0.5
    )
    created = create_nats_bus(config)
    yield created
    await created.close(timeout=5.0)


async def test_a_raw_client_reads_what_the_bus_publishes(
    bus: NatsJetStreamBus, raw: Client
) -> None:
    event = Event("orders.created", {"order": 7}, key="customer-1", headers={"h": "1"})
    await bus.publish(event)
    js = raw.jetstream()
    subject = bus.config.subject("orders.created")
    assert subject == f"{bus.config.subject_prefix}.orders.created"
    sub = await js.pull_subscribe(subject, durable="raw-reader")
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.ack()
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == str(event.id)
    assert msg.headers["Dotmac-Key"] == "customer-1"
    envelope = json.loads(msg.data)
    assert envelope["id"] == str(event.id) and envelope["payload"] == {"order": 7}
    assert envelope["key"] == "customer-1" and envelope["headers"] == {"h": "1"}
    assert msg.metadata.stream == bus.config.stream_name("orders.created")


async def test_the_bus_reads_what_a_raw_client_publishes(
    bus: NatsJetStreamBus, raw: Client
) -> None:
    topic = "payments.settled"
    got: list[Event] = []

    async def handler(event: Event) -> None:
        got.append(event)

    await bus.subscribe(topic, handler, group="g")
    js = raw.jetstream()
    subject = bus.config.subject(topic)
    ours = Event(topic, {"amount": 12}, key="acct-9")
    await js.publish(subject, JsonCodec().encode(ours), headers={"Dotmac-Key": "acct-9"})
    await js.publish(subject, b"not an event at all", headers={"trace": "t-1"})
    dead = DeadLetters(bus, f"{topic}.DLQ")
    entries: list[DLQEntry] = []
    deadline = asyncio.get_running_loop().time() + 15
    while not (got and entries):
        assert asyncio.get_running_loop().time() < deadline, "the event and the dead letter"
        await asyncio.sleep(0.05)
        entries = await dead.list()
    assert got[0] == ours and got[0].key == "acct-9"
    assert got[0].delivery is not None and got[0].delivery.count == 1
    (entry,) = entries
    assert entry.error_type == "DecodeError" and entry.original_topic == topic
    assert entry.original_data == b"not an event at all" and entry.original_event is None
    assert entry.original_headers == (("trace", b"t-1"),)  # the server's Nats-* left out


async def test_a_raw_client_reads_a_dead_letter_as_the_event_plus_failure_headers(
    bus: NatsJetStreamBus, raw: Client
) -> None:
    topic = "orders.failed"

    async def handler(event: Event) -> None:
        raise Reject("card declined\nby the bank: 100% sure")

    await run_consumer(bus, topic, handler, ConsumerOptions(max_retries=0), group="billing")
    original = Event(topic, {"order": 7, "name": "Zoë"}, key="cust 1", headers={"h": "v"})
    await bus.publish(original)
    stream = bus.config.stream_name(f"{topic}.DLQ")
    js = raw.jetstream()
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        try:
            stored = await js.get_msg(stream, 1)
            break
        except NotFoundError:
            assert asyncio.get_running_loop().time() < deadline, "the dead letter"
            await asyncio.sleep(0.05)
    envelope = json.loads(stored.data or b"")  # the original envelope, not a wrapper around it
    assert envelope["id"] == str(original.id) and envelope["topic"] == topic
    assert envelope["payload"] == {"order": 7, "name": "Zoë"} and envelope["headers"] == {"h": "v"}
    assert stored.data == JsonCodec().encode(original)
    headers = stored.headers or {}
    assert headers["Dotmac-Key"] == "cust 1"
    assert headers["kafka_dlt-original-topic"] == topic
    assert headers["kafka_dlt-original-consumer-group"] == "billing"
    assert headers["kafka_dlt-exception-fqcn"] == "dotmac.events.errors.Reject"
    # one line of text: the newline and the % percent-encoded, the rest as it was
    assert headers["kafka_dlt-exception-message"] == "card declined%0Aby the bank: 100%25 sure"
    assert headers["dotmac-dlt-attempts"] == "1"
    assert headers["dotmac-dlt-original-id"] == "1"  # the original's stream sequence
    assert headers["dotmac-dlt-first-failure-at"] <= headers["dotmac-dlt-last-failure-at"]
    assert headers["Nats-Msg-Id"] != str(original.id)  # a write of its own, never deduplicated
    (entry,) = await DeadLetters(bus, f"{topic}.DLQ").list()  # and we read it back exactly
    assert entry.error == "card declined\nby the bank: 100% sure"
    assert entry.original_event == original and entry.original_key == "cust 1"


async def test_a_repeated_event_id_is_stored_once(bus: NatsJetStreamBus, raw: Client) -> None:
    event = Event("dedup.topic", {"n": 1})
    await bus.publish(event)
    await bus.publish(event)  # a publisher's retry: the same Nats-Msg-Id
    await bus.publish(Event("dedup.topic", {"n": 2}))
    await asyncio.sleep(0.1)
    info = await raw.jetstream().stream_info(bus.config.stream_name("dedup.topic"))
    assert info.state.messages == 2
    stats = await bus.stats("dedup.topic")
    assert stats.length == 2
