"""Typed payloads on a real bus (memory, Redis, Kafka): register_schema with pydantic models,
dataclasses and msgspec Structs, typed handlers, the DLQ, and typed replies to requests."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pydantic
import pytest

from dotmac.events import (
    ConsumerOptions,
    DLQEntry,
    Event,
    EventBus,
    EventRouter,
    RedisConfig,
    create_memory_bus,
    create_redis_bus,
    run_consumer,
)
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.engine.bus import TransportBus
from dotmac.events.errors import ValidationError
from dotmac.events.testing import wait_until
from tests.support.kafka_helpers import kafka_test_config

FAST = ConsumerOptions(max_retries=2, backoff_base_ms=10, jitter=False)


class Order(pydantic.BaseModel):
    __schema_version__ = "order.v1"
    id: int
    total: float


@dataclasses.dataclass
class Shipment:
    order_id: int
    carrier: str


class Line(msgspec.Struct):
    sku: str
    qty: int


class Invoice(msgspec.Struct, forbid_unknown_fields=True):
    __schema_version__ = "invoice.v3"
    number: int
    lines: list[Line]
    note: str | None = None


@pytest.fixture(params=["memory", "redis", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[TransportBus]:
    made: EventBus
    if request.param == "memory":
        made = create_memory_bus()
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        made = create_redis_bus(
            RedisConfig(url=url, key_prefix=f"typ{uuid.uuid4().hex[:6]}:", block_ms=100)
        )
    else:
        made = create_kafka_bus(kafka_test_config(request.getfixturevalue("kafka_bootstrap")))
    assert isinstance(made, TransportBus)
    yield made
    await made.close()


def topic(name: str) -> str:
    return f"typed.{name}.{uuid.uuid4().hex[:8]}"


async def test_publish_refuses_an_invalid_payload_naming_the_field(bus: TransportBus) -> None:
    orders = topic("orders")
    bus.register_schema(orders, Order)
    with pytest.raises(ValidationError) as info:
        await bus.publish(Event(orders, {"id": 1, "total": "lots"}))
    assert info.value.field == "total"
    with pytest.raises(ValidationError):
        await bus.publish_many([Event(orders, {"id": 2, "total": 1.0}), Event(orders, {})])


async def test_typed_handler_gets_the_model_and_the_event(bus: TransportBus) -> None:
    orders = topic("orders")
    bus.register_schema(orders, Order)
    seen: list[tuple[Order, str | None]] = []

    async def on_order(order: Order, event: Event) -> None:
        seen.append((order, event.metadata.schema_version if event.metadata else None))

    await bus.subscribe(orders, on_order, group="billing")
    await bus.publish(Event(orders, Order(id=1, total=9.5)))
    await bus.publish(Event(orders, {"id": 2, "total": 3}))
    await wait_until(lambda: len(seen) == 2, 10)
    assert sorted(seen, key=lambda s: s[0].id) == [
        (Order(id=1, total=9.5), "order.v1"),
        (Order(id=2, total=3.0), "order.v1"),
    ]


async def test_router_with_a_dataclass_and_a_plain_def_handler(bus: TransportBus) -> None:
    shipments = topic("shipments")
    router = EventRouter()
    seen: list[Shipment] = []

    @router.handler(shipments, group="ship")
    def on_shipment(shipment: Shipment) -> None:  # runs in a worker thread
        seen.append(shipment)

    await router.start(bus)
    try:
        await bus.publish(Event(shipments, Shipment(order_id=5, carrier="dhl")))
        await wait_until(lambda: seen == [Shipment(order_id=5, carrier="dhl")], 10)
    finally:
        await router.stop()


async def test_invalid_consumed_payload_is_dead_lettered_not_handled(bus: TransportBus) -> None:
    orders = topic("orders")
    handled: list[Any] = []
    dead: list[DLQEntry] = []

    async def on_order(order: Order) -> None:
        handled.append(order)

    async def on_dead(event: Event) -> None:
        dead.append(DLQEntry.from_event(event))

    await bus.subscribe(f"{orders}.DLQ", on_dead, group="dlq")
    await run_consumer(bus, orders, on_order, FAST, group="billing")
    # A producer without the schema (another service, an old release) sends a bad payload.
    await bus.publish(Event(orders, {"id": "x", "total": 1}))
    await bus.publish(Event(orders, {"id": 3, "total": 1}))
    await wait_until(lambda: len(dead) == 1 and len(handled) == 1, 10)
    assert handled == [Order(id=3, total=1.0)]
    assert dead[0].error_type == "DecodeError"
    assert "id" in dead[0].error and "Order" in dead[0].error


async def test_registered_schema_guards_plain_event_handlers(bus: TransportBus) -> None:
    shipments = topic("shipments")
    bus.register_schema(shipments, Shipment)
    seen: list[Any] = []
    dead: list[str] = []

    async def on_event(event: Event) -> None:
        seen.append(event.payload)

    async def on_dead(event: Event) -> None:
        dead.append(event.headers["kafka_dlt-exception-fqcn"].rpartition(".")[2])

    await bus.subscribe(f"{shipments}.DLQ", on_dead, group="dlq")
    await run_consumer(bus, shipments, on_event, FAST, group="g")
    # Bypass the publish check the way a foreign producer would: the engine's own path.
    await bus._publish(Event(shipments, {"order_id": 1}))
    await bus.publish(Event(shipments, {"order_id": 2, "carrier": "ups"}))
    await wait_until(lambda: len(seen) == 1 and len(dead) == 1, 10)
    assert seen == [{"order_id": 2, "carrier": "ups"}]
    assert dead == ["DecodeError"]


async def test_msgspec_struct_publish_refuses_an_invalid_payload_naming_the_field(
    bus: TransportBus,
) -> None:
    invoices = topic("invoices")
    bus.register_schema(invoices, Invoice)
    bad = [
        ({"number": 1, "lines": [{"sku": "a", "qty": "two"}]}, "lines[0].qty"),
        ({"number": 1, "lines": [{"qty": 2}]}, "lines[0].sku"),
        ({"lines": []}, "number"),
        ({"number": 1, "lines": [], "colour": "red"}, "colour"),
    ]
    for payload, field in bad:
        with pytest.raises(ValidationError) as info:
            await bus.publish(Event(invoices, payload))
        assert (info.value.field, info.value.schema) == (field, "Invoice")
    with pytest.raises(ValidationError) as info:  # a Struct is not checked when built
        await bus.publish(Event(invoices, Invoice(number="7", lines=[])))  # type: ignore[arg-type]
    assert info.value.field == "number"


async def test_msgspec_typed_handler_gets_the_struct_and_the_event(bus: TransportBus) -> None:
    invoices = topic("invoices")
    bus.register_schema(invoices, Invoice)
    seen: list[tuple[Invoice, str | None]] = []

    async def on_invoice(invoice: Invoice, event: Event) -> None:
        seen.append((invoice, event.metadata.schema_version if event.metadata else None))

    await bus.subscribe(invoices, on_invoice, group="billing")
    await bus.publish(Event(invoices, Invoice(number=1, lines=[Line("a", 2)]), key="k"))
    await bus.publish(Event(invoices, {"number": 2, "lines": [], "note": "rush"}, key="k"))
    await wait_until(lambda: len(seen) == 2, 20)
    assert seen == [
        (Invoice(number=1, lines=[Line("a", 2)]), "invoice.v3"),
        (Invoice(number=2, lines=[], note="rush"), "invoice.v3"),
    ]


async def test_msgspec_invalid_consumed_payload_is_dead_lettered_with_the_field(
    bus: TransportBus,
) -> None:
    invoices = topic("invoices")
    handled: list[Invoice] = []
    dead: list[DLQEntry] = []

    async def on_invoice(invoice: Invoice) -> None:  # the schema comes from the annotation
        handled.append(invoice)

    async def on_dead(event: Event) -> None:
        dead.append(DLQEntry.from_event(event))

    await bus.subscribe(f"{invoices}.DLQ", on_dead, group="dlq")
    await run_consumer(bus, invoices, on_invoice, FAST, group="billing")
    await bus.publish(Event(invoices, {"number": 1, "lines": [{"sku": "a", "qty": "x"}]}))
    await bus.publish(Event(invoices, {"number": 2, "lines": []}))
    await wait_until(lambda: len(dead) == 1 and len(handled) == 1, 20)
    assert handled == [Invoice(number=2, lines=[])]
    assert dead[0].error_type == "DecodeError"
    assert "lines[0].qty" in dead[0].error and "Invoice" in dead[0].error


async def test_a_typed_handler_replies_with_the_dump_of_the_model_it_returns(
    bus: TransportBus,
) -> None:
    """A request's reply is the handler's return value: a pydantic model, a dataclass or a
    msgspec Struct is sent as the same JSON dump publish uses, so the requester gets a dict."""
    quotes = topic("quotes")

    async def quote(line: Line) -> Any:
        if line.sku == "pydantic":
            return Order(id=line.qty, total=line.qty * 1.5)
        if line.sku == "dataclass":
            return Shipment(order_id=line.qty, carrier="dhl")
        if line.sku == "struct":
            return Invoice(number=line.qty, lines=[line])
        return {"plain": line.qty}

    await bus.subscribe(quotes, quote, group="pricing")
    assert await bus.request(quotes, {"sku": "pydantic", "qty": 2}, timeout=20) == {
        "id": 2,
        "total": 3.0,
    }
    assert await bus.request(quotes, {"sku": "dataclass", "qty": 3}, timeout=20) == {
        "order_id": 3,
        "carrier": "dhl",
    }
    assert await bus.request(quotes, {"sku": "struct", "qty": 4}, timeout=20) == {
        "number": 4,
        "lines": [{"sku": "struct", "qty": 4}],
        "note": None,
    }
    assert await bus.request(quotes, {"sku": "other", "qty": 5}, timeout=20) == {"plain": 5}
