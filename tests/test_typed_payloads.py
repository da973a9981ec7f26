"""Typed payloads on a real bus (memory and Redis): register_schema, typed handlers, the DLQ."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

from dotmac.events import (
    ConsumerOptions,
    Event,
    EventBus,
    EventRouter,
    RedisConfig,
    create_memory_bus,
    create_redis_bus,
    run_consumer,
)
from dotmac.events.engine.bus import TransportBus
from dotmac.events.errors import ValidationError
from dotmac.events.testing import wait_until

FAST = ConsumerOptions(max_retries=2, backoff_base_ms=10, jitter=False)


class Order(pydantic.BaseModel):
    __schema_version__ = "order.v1"
    id: int
    total: float


@dataclasses.dataclass
class Shipment:
    order_id: int
    carrier: str


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[TransportBus]:
    made: EventBus
    if request.param == "memory":
        made = create_memory_bus()
    else:
        url = request.getfixturevalue("redis_url")
        made = create_redis_bus(
            RedisConfig(url=url, key_prefix=f"typ{uuid.uuid4().hex[:6]}:", block_ms=100)
        )
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
    dead: list[dict[str, Any]] = []

    async def on_order(order: Order) -> None:
        handled.append(order)

    async def on_dead(event: Event) -> None:
        dead.append(event.payload)

    await bus.subscribe(f"{orders}.DLQ", on_dead, group="dlq")
    await run_consumer(bus, orders, on_order, FAST, group="billing")
    # A producer without the schema (another service, an old release) sends a bad payload.
    await bus.publish(Event(orders, {"id": "x", "total": 1}))
    await bus.publish(Event(orders, {"id": 3, "total": 1}))
    await wait_until(lambda: len(dead) == 1 and len(handled) == 1, 10)
    assert handled == [Order(id=3, total=1.0)]
    assert dead[0]["error_type"] == "DecodeError"
    assert "id" in dead[0]["error"] and "Order" in dead[0]["error"]


async def test_registered_schema_guards_plain_event_handlers(bus: TransportBus) -> None:
    shipments = topic("shipments")
    bus.register_schema(shipments, Shipment)
    seen: list[Any] = []
    dead: list[str] = []

    async def on_event(event: Event) -> None:
        seen.append(event.payload)

    async def on_dead(event: Event) -> None:
        dead.append(event.payload["error_type"])

    await bus.subscribe(f"{shipments}.DLQ", on_dead, group="dlq")
    await run_consumer(bus, shipments, on_event, FAST, group="g")
    # Bypass the publish check the way a foreign producer would: the engine's own path.
    await bus._publish(Event(shipments, {"order_id": 1}))
    await bus.publish(Event(shipments, {"order_id": 2, "carrier": "ups"}))
    await wait_until(lambda: len(seen) == 1 and len(dead) == 1, 10)
    assert seen == [{"order_id": 2, "carrier": "ups"}]
    assert dead == ["DecodeError"]
