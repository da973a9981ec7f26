"""Interop with a raw nats-py client: it reads what the bus publishes, and the bus reads what it
publishes (our JSON envelope), dead-lettering foreign bytes; a repeated event id is stored once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from dotmac.events import Event, NatsConfig, create_nats_bus
from dotmac.events.adapters.nats import NatsJetStreamBus
from dotmac.events.codec import JsonCodec
from dotmac.events.testing import wait_until

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
    dead: list[Event] = []

    async def handler(event: Event) -> None:
        got.append(event)

    async def on_dead(event: Event) -> None:
        dead.append(event)

    await bus.subscribe(topic, handler, group="g")
    await bus.subscribe(f"{topic}.DLQ", on_dead, group="dlq")
    js = raw.jetstream()
    subject = bus.config.subject(topic)
    ours = Event(topic, {"amount": 12}, key="acct-9")
    await js.publish(subject, JsonCodec().encode(ours), headers={"Dotmac-Key": "acct-9"})
    await js.publish(subject, b"not an event at all")
    await wait_until(lambda: bool(got) and bool(dead), 15, "the event and the dead letter")
    assert got[0] == ours and got[0].key == "acct-9"
    assert got[0].delivery is not None and got[0].delivery.count == 1
    assert dead[0].payload["error_type"] == "DecodeError"


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
