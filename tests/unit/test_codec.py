"""JsonCodec: exact round trips, a versioned envelope, named encode errors, typed decode errors."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dotmac.events import (
    Codec,
    CodecError,
    DecodeError,
    EncodeError,
    Event,
    EventMetadata,
    JsonCodec,
    create_memory_bus,
)
from dotmac.events.codec import ENVELOPE_VERSION

CODEC = JsonCodec()


def _full_event() -> Event:
    return Event(
        "orders.créées",
        {
            "text": "naïve café ✓ 日本語 😀",
            "nested": {"list": [1, 2.5, None, True, {"deep": ["x", {"y": -3}]}], "empty": {}},
            "big": 2**63 - 1,
            "small": -(2**63) + 1,
            "float": 0.1,
        },
        key="customer-42",
        headers={"trace": "abc", "ünï": "çødé"},
        tenant_id="tenant-ß",
        metadata=EventMetadata(
            correlation_id="corr-1",
            causation_id="cause-1",
            producer="billing",
            content_type="application/vnd.x+json",
            schema_version="2.1",
        ),
        timestamp=datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
    )


def test_codec_satisfies_the_protocol() -> None:
    assert isinstance(CODEC, Codec)
    assert CODEC.content_type == "application/json"


def test_round_trip_keeps_every_field_exactly() -> None:
    event = _full_event()
    decoded = CODEC.decode(CODEC.encode(event))
    assert decoded == event
    assert decoded.id == event.id and isinstance(decoded.id, uuid.UUID)
    assert decoded.timestamp == event.timestamp
    assert decoded.timestamp.microsecond == 789012
    assert decoded.timestamp.utcoffset() == timedelta(0)
    assert decoded.payload == event.payload
    assert decoded.headers == event.headers
    assert decoded.tenant_id == "tenant-ß"
    assert decoded.key == "customer-42"
    assert decoded.metadata == event.metadata
    assert decoded.delivery is None


def test_round_trip_of_minimal_event_and_scalar_payloads() -> None:
    for payload in (None, 0, -1.5, "s", [], {}, True, [None]):
        event = Event("t", payload)
        decoded = CODEC.decode(CODEC.encode(event))
        assert decoded == event
        assert decoded.metadata is None
        assert decoded.key is None


def test_non_utc_timestamp_round_trips_as_the_same_instant() -> None:
    local = datetime(2026, 1, 1, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    decoded = CODEC.decode(CODEC.encode(Event("t", None, timestamp=local)))
    assert decoded.timestamp == local
    assert decoded.timestamp.tzinfo is UTC


def test_envelope_is_versioned_json() -> None:
    event = _full_event()
    doc = orjson.loads(CODEC.encode(event))
    assert doc["v"] == ENVELOPE_VERSION == 1
    assert doc["id"] == str(event.id)
    assert doc["ts"] == "2026-02-03T04:05:06.789012+00:00"
    assert doc["payload"] == event.payload
    assert doc["meta"]["producer"] == "billing"


def test_unknown_envelope_version_is_a_decode_error() -> None:
    doc = orjson.loads(CODEC.encode(Event("t", None)))
    doc["v"] = 2
    with pytest.raises(DecodeError, match="version 2"):
        CODEC.decode(orjson.dumps(doc))


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"tags": {1, 2}}, "payload.tags (set)"),
        ({"blob": b"\x00"}, "payload.blob (bytes)"),
        ({"obj": _Opaque()}, "payload.obj (_Opaque)"),
        ({1: "a"}, "payload (key 1 is not a str)"),
        ({"a": [1, {"b": [0, {2, 3}]}]}, "payload.a[1].b[1] (set)"),
        ({"a": {"b": {(1, 2): "x"}}}, "payload.a.b (key (1, 2) is not a str)"),
        ([1, 2, b"x"], "payload[2] (bytes)"),
        ({"huge": 2**70}, "payload.huge (int)"),
        (object(), "payload (object)"),
    ],
)
def test_encode_error_names_the_offending_field(payload: Any, where: str) -> None:
    with pytest.raises(EncodeError) as info:
        CODEC.encode(Event("t", payload))
    assert where in str(info.value)
    assert "'t'" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CodecError)


def test_encode_error_names_a_bad_header_not_the_payload() -> None:
    # A lone surrogate is a valid Python str but not valid UTF-8, so it cannot be JSON.
    with pytest.raises(EncodeError, match=r"headers\.h \(str\)"):
        CODEC.encode(Event("t", {"fine": 1}, headers={"h": "\ud800"}))


async def test_publish_raises_encode_error_and_sends_nothing() -> None:
    bus = create_memory_bus()
    try:
        with pytest.raises(EncodeError, match=r"payload\.when\[0\] \(bytes\)"):
            await bus.publish(Event("t", {"when": [b"raw"]}))
        with pytest.raises(EncodeError, match=r"payload\.s \(set\)"):
            await bus.publish_many([Event("t", {"ok": 1}), Event("t", {"s": {1}})])
        assert bus.history("t") == []
        assert (await bus.stats("t")).length == 0
    finally:
        await bus.close()


def _only_positive(topic: str, payload: Any) -> None:
    if not isinstance(payload, dict) or payload.get("n", 0) <= 0:
        raise ValueError(f"n must be positive on {topic}")


def test_schema_validation_on_encode() -> None:
    codec = JsonCodec.with_schema_validation(_only_positive)
    assert isinstance(codec, JsonCodec)
    codec.encode(Event("t", {"n": 1}))
    with pytest.raises(EncodeError, match=r"schema validation failed for topic .t.: n must be"):
        codec.encode(Event("t", {"n": -1}))


def test_schema_validation_on_decode() -> None:
    codec = JsonCodec.with_schema_validation(_only_positive)
    bad = JsonCodec().encode(Event("t", {"n": 0}))
    with pytest.raises(DecodeError, match="schema validation failed"):
        codec.decode(bad)
    good = Event("t", {"n": 5})
    assert codec.decode(codec.encode(good)) == good


def test_validator_receives_topic_and_payload() -> None:
    seen: list[tuple[str, Any]] = []
    codec = JsonCodec.with_schema_validation(lambda topic, payload: seen.append((topic, payload)))
    event = Event("orders", {"n": 1})
    codec.decode(codec.encode(event))
    assert seen == [("orders", {"n": 1}), ("orders", {"n": 1})]


async def test_publish_with_validating_codec_raises_encode_error() -> None:
    bus = create_memory_bus(codec=JsonCodec.with_schema_validation(_only_positive))
    try:
        with pytest.raises(EncodeError):
            await bus.publish(Event("t", {"n": -2}))
        await bus.publish(Event("t", {"n": 2}))
        assert [e.payload for e in bus.history("t")] == [{"n": 2}]
    finally:
        await bus.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object envelope, got list"),
        (b'"text"', "got str"),
        (b"{}", "unknown envelope version None"),
        (b'{"v": 1}', "missing field"),
        (b'{"v": "1"}', "unknown envelope version '1'"),
    ],
)
def test_garbage_is_a_decode_error_saying_what_was_wrong(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        CODEC.decode(data)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "not-a-uuid"),
        ("id", 5),
        ("ts", "yesterday"),
        ("ts", "2026-01-01T00:00:00"),  # naive
        ("topic", ""),
        ("key", 3),
        ("headers", {"a": 1}),
        ("headers", "ab"),
        ("meta", "m"),
        ("meta", {"producer": 5}),
        ("tenant_id", ["x"]),
    ],
)
def test_invalid_envelope_field_is_a_decode_error(field: str, value: Any) -> None:
    doc = orjson.loads(CODEC.encode(Event("t", {"a": 1})))
    doc[field] = value
    with pytest.raises(DecodeError, match="invalid field"):
        CODEC.decode(orjson.dumps(doc))


@pytest.mark.parametrize("field", ["id", "topic", "key", "ts", "tenant_id", "headers", "meta"])
def test_missing_envelope_field_is_named(field: str) -> None:
    doc = orjson.loads(CODEC.encode(Event("t", None)))
    del doc[field]
    with pytest.raises(DecodeError, match=f"missing field '{field}'"):
        CODEC.decode(orjson.dumps(doc))


# --- property tests ---------------------------------------------------------------------------

_ints = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_json = st.recursive(
    st.none() | st.booleans() | _ints | _floats | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
_offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)
_timestamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=_offsets
)
_optional_text = st.none() | st.text(max_size=20)
_metadata = st.none() | st.builds(
    EventMetadata,
    correlation_id=_optional_text,
    causation_id=_optional_text,
    producer=_optional_text,
    content_type=st.text(min_size=1, max_size=20),
    schema_version=_optional_text,
)
_events = st.builds(
    Event,
    topic=st.text(min_size=1, max_size=30),
    payload=_json,
    key=_optional_text,
    headers=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
    tenant_id=_optional_text,
    metadata=_metadata,
    id=st.uuids(),
    timestamp=_timestamps,
)


@settings(max_examples=300, deadline=None)
@given(_events)
def test_property_decode_encode_is_identity(event: Event) -> None:
    decoded = CODEC.decode(CODEC.encode(event))
    assert decoded == event
    assert decoded.id == event.id
    assert decoded.timestamp == event.timestamp
    assert decoded.headers == event.headers
    assert decoded.metadata == event.metadata


def _decode_or_decode_error(data: bytes) -> None:
    try:
        result = CODEC.decode(data)
    except DecodeError:
        return
    assert isinstance(result, Event)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_bytes_raise_only_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_property_random_json_raises_only_decode_error(value: Any) -> None:
    _decode_or_decode_error(orjson.dumps(value))


_envelope_fields = st.sampled_from(
    ["v", "id", "topic", "key", "ts", "tenant_id", "headers", "meta"]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _events,
    st.lists(st.tuples(_envelope_fields, st.booleans(), _json), min_size=1, max_size=3),
)
def test_property_mutated_envelopes_raise_only_decode_error(
    event: Event, mutations: list[tuple[str, bool, Any]]
) -> None:
    doc = orjson.loads(CODEC.encode(event))
    for field, delete, value in mutations:
        if delete:
            doc.pop(field, None)
        else:
            doc[field] = value
    _decode_or_decode_error(orjson.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(_events, st.data())
def test_property_truncated_or_flipped_bytes_raise_only_decode_error(
    event: Event, data: st.DataObject
) -> None:
    raw = bytearray(CODEC.encode(event))
    cut = data.draw(st.integers(0, len(raw)))
    flip = data.draw(st.integers(0, len(raw) - 1))
    _decode_or_decode_error(bytes(raw[:cut]))
    raw[flip] ^= data.draw(st.integers(1, 255))
    _decode_or_decode_error(bytes(raw))


def test_codec_is_usable_concurrently() -> None:
    """The codec holds no per-call state: many tasks share one instance."""

    async def main() -> list[Event]:
        events = [Event("t", {"i": i}) for i in range(200)]

        async def one(e: Event) -> Event:
            await asyncio.sleep(0)
            return CODEC.decode(CODEC.encode(e))

        decoded = await asyncio.gather(*(one(e) for e in events))
        assert decoded == events
        return decoded

    assert len(asyncio.run(main())) == 200
