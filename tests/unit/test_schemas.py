"""TopicSchema over pydantic models, msgspec Structs and dataclasses, typed handlers, model
replies, and neither pydantic nor msgspec imported by the package."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import msgspec
import pydantic
import pytest

from dotmac.events.codec import JsonCodec
from dotmac.events.errors import ConfigurationError, DecodeError, EncodeError, ValidationError
from dotmac.events.event import Event, EventMetadata
from dotmac.events.schemas import (
    SchemaCodec,
    TopicSchema,
    dump_model,
    is_schema_model,
    typed_handler,
)


class Line(pydantic.BaseModel):
    sku: str
    qty: int


class Order(pydantic.BaseModel):
    __schema_version__ = "order.v2"
    id: int
    lines: list[Line] = []


@dataclasses.dataclass
class Item:
    sku: str
    qty: int


@dataclasses.dataclass
class Basket:
    id: int
    items: list[Item]
    note: str | None = None
    price: float = 0.0


class Part(msgspec.Struct):
    sku: str
    qty: int


class Crate(msgspec.Struct, forbid_unknown_fields=True):
    __schema_version__ = 3
    id: int
    parts: list[Part]
    labels: dict[str, int] = {}
    note: str | None = None


def test_pydantic_load_dump_and_version() -> None:
    schema = TopicSchema(Order)
    order = schema.load({"id": 1, "lines": [{"sku": "a", "qty": 2}]})
    assert isinstance(order, Order) and order.lines[0].qty == 2
    assert schema.dump(order) == {"id": 1, "lines": [{"sku": "a", "qty": 2}]}
    assert schema.version == "order.v2"
    assert TopicSchema(Line).version == "Line"


def test_pydantic_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        TopicSchema(Order).load({"id": 1, "lines": [{"sku": "a", "qty": "many"}]})
    assert info.value.field == "lines.0.qty"
    assert info.value.schema == "Order"
    assert isinstance(info.value, EncodeError) and not info.value.retryable


def test_dataclass_load_converts_nested_and_checks_types() -> None:
    schema = TopicSchema(Basket)
    basket = schema.load({"id": 7, "items": [{"sku": "x", "qty": 1}], "price": 3})
    assert basket == Basket(id=7, items=[Item("x", 1)], price=3.0)
    assert schema.dump(basket) == {
        "id": 7,
        "items": [{"sku": "x", "qty": 1}],
        "note": None,
        "price": 3.0,
    }
    assert schema.version == "Basket"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"items": []}, "id"),
        ({"id": "7", "items": []}, "id"),
        ({"id": True, "items": []}, "id"),
        ({"id": 1, "items": [{"sku": "x", "qty": "1"}]}, "items[0].qty"),
        ({"id": 1, "items": [], "colour": "red"}, "colour"),
        ({"id": 1, "items": [], "note": 5}, "note"),
        ([1, 2], "payload"),
    ],
)
def test_dataclass_error_names_the_field(payload: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TopicSchema(Basket).load(payload)
    assert info.value.field == field
    assert field in str(info.value)


def test_msgspec_struct_load_dump_and_version() -> None:
    schema = TopicSchema(Crate)
    crate = schema.load({"id": 1, "parts": [{"sku": "a", "qty": 2}], "labels": {"x": 1}})
    assert crate == Crate(id=1, parts=[Part("a", 2)], labels={"x": 1})
    assert schema.dump(crate) == {
        "id": 1,
        "parts": [{"sku": "a", "qty": 2}],
        "labels": {"x": 1},
        "note": None,
    }
    assert schema.version == "3"
    assert TopicSchema(Part).version == "Part"
    assert is_schema_model(Crate) and not is_schema_model(Crate(id=1, parts=[]))


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({"parts": []}, "id", "missing required field `id`"),
        ({"id": "7", "parts": []}, "id", "Expected `int`, got `str`"),
        ({"id": True, "parts": []}, "id", "Expected `int`, got `bool`"),
        ({"id": 1, "parts": [{"sku": "x", "qty": "1"}]}, "parts[0].qty", "got `str`"),
        ({"id": 1, "parts": [{"qty": 1}]}, "parts[0].sku", "missing required field `sku`"),
        ({"id": 1, "parts": [], "colour": "red"}, "colour", "unknown field `colour`"),
        ({"id": 1, "parts": [], "labels": {"a": "b"}}, "labels[...]", "Expected `int`"),
        ([1, 2], "payload", "Expected `object`, got `array`"),
    ],
)
def test_msgspec_error_names_the_field(payload: Any, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        TopicSchema(Crate).load(payload)
    assert info.value.field == field
    assert info.value.schema == "Crate"
    assert reason in str(info.value)
    assert isinstance(info.value.__cause__, msgspec.ValidationError)


def test_msgspec_struct_instances_are_checked_on_publish() -> None:
    schema = TopicSchema(Crate)
    event = schema.for_publish(Event("crates", Crate(id=2, parts=[Part("p", 1)])))
    assert event.payload == {"id": 2, "parts": [{"sku": "p", "qty": 1}], "labels": {}, "note": None}
    assert event.metadata == EventMetadata(schema_version="3")
    with pytest.raises(ValidationError) as info:  # a Struct is not checked when built
        schema.for_publish(Event("crates", Crate(id=2, parts=[Part("p", "1")])))  # type: ignore[arg-type]
    assert info.value.field == "parts[0].qty"


def test_dump_model_dumps_model_instances_and_leaves_the_rest() -> None:
    assert dump_model(Order(id=1)) == {"id": 1, "lines": []}
    assert dump_model(Item("a", 1)) == {"sku": "a", "qty": 1}
    assert dump_model(Part("b", 2)) == {"sku": "b", "qty": 2}
    plain = {"id": 1}
    assert dump_model(plain) is plain
    assert dump_model(None) is None
    assert dump_model(Order) is Order  # a class is not an instance
    event = Event("t", {})
    assert dump_model(event) is event  # an Event is not a payload model


def test_not_a_model_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        TopicSchema(dict)
    with pytest.raises(ConfigurationError):
        TopicSchema(Event)


def test_for_publish_dumps_instances_and_sets_schema_version() -> None:
    schema = TopicSchema(Order)
    event = schema.for_publish(Event("orders", Order(id=3), key="k"))
    assert event.payload == {"id": 3, "lines": []}
    assert event.key == "k"
    assert event.metadata == EventMetadata(schema_version="order.v2")
    kept = EventMetadata(correlation_id="c", schema_version="mine")
    assert schema.for_publish(Event("orders", {"id": 1}, metadata=kept)).metadata == kept
    with pytest.raises(ValidationError):
        schema.for_publish(Event("orders", {"id": "x"}))
    with pytest.raises(ValidationError):  # a dataclass instance is not checked when built
        TopicSchema(Item).for_publish(Event("items", Item(sku="a", qty="2")))  # type: ignore[arg-type]


def test_schema_codec_turns_a_bad_payload_into_a_decode_error() -> None:
    codec = SchemaCodec(JsonCodec(), TopicSchema(Order))
    good = codec.encode(Event("orders", {"id": 1}))
    assert codec.decode(good).payload == {"id": 1}
    with pytest.raises(DecodeError, match="id") as info:
        codec.decode(codec.encode(Event("orders", {"id": "nope"})))
    assert isinstance(info.value.__cause__, ValidationError)


async def test_typed_handler_receives_the_model_and_optionally_the_event() -> None:
    seen: list[Any] = []

    async def only_order(order: Order) -> int:
        seen.append(order)
        return order.id

    def with_event(item: Item, event: Event) -> None:
        seen.append((item, event.topic))

    async def plain(event: Event) -> None: ...

    typed = typed_handler(only_order)
    assert typed is not None and typed[1].model is Order
    assert await typed[0](Event("o", {"id": 4})) == 4
    typed = typed_handler(with_event)
    assert typed is not None and typed[1].model is Item
    typed[0](Event("i", {"sku": "s", "qty": 1}))
    assert seen == [Order(id=4), (Item("s", 1), "i")]
    assert typed_handler(plain) is None

    async def odd(order: Order, event: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    typed = typed_handler(odd)  # the second annotation does not resolve; the first still counts
    assert typed is not None and typed[1].model is Order
    assert typed_handler(lambda event: None) is None

    async def struct_first(part: Part) -> int:
        return part.qty

    typed = typed_handler(struct_first)
    assert typed is not None and typed[1].model is Part
    assert await typed[0](Event("p", {"sku": "s", "qty": 9})) == 9


def test_import_dotmac_events_does_not_import_pydantic_or_msgspec() -> None:
    code = (
        "import sys, dotmac.events, dotmac.events.schemas, dotmac.events.engine.bus;"
        "assert 'pydantic' not in sys.modules, 'pydantic imported';"
        "assert 'msgspec' not in sys.modules, 'msgspec imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


WITHOUT_PYDANTIC = """
import asyncio, dataclasses, sys
sys.modules["pydantic"] = None  # importing it now raises ImportError
from dotmac.events import Event, create_memory_bus
from dotmac.events.errors import ValidationError

@dataclasses.dataclass
class Ping:
    n: int

async def main():
    got = []
    async with create_memory_bus() as bus:
        bus.register_schema("ping", Ping)
        async def on_ping(ping: Ping) -> None:
            got.append(ping)
        await bus.subscribe("ping", on_ping)
        try:
            await bus.publish(Event("ping", {"n": "one"}))
        except ValidationError as exc:
            assert exc.field == "n", exc
        else:
            raise AssertionError("published an invalid payload")
        await bus.publish(Event("ping", Ping(2)))
        while not got:
            await asyncio.sleep(0.01)
    assert got == [Ping(2)], got
    print("OK")

asyncio.run(main())
"""


def test_dataclass_schemas_work_without_pydantic() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYDANTIC],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
