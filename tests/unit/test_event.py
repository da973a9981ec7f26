"""Event: generated identity, UTC timestamps, immutability and field validation."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from dotmac.events import DeliveryInfo, Event, EventMetadata, InvalidEventError


def test_id_is_a_uuid_and_unique() -> None:
    a = Event("t", {"n": 1})
    b = Event("t", {"n": 1})
    assert isinstance(a.id, uuid.UUID)
    assert a.id != b.id


def test_timestamp_is_aware_utc_and_recent() -> None:
    before = datetime.now(UTC)
    event = Event("t", None)
    after = datetime.now(UTC)
    assert event.timestamp.tzinfo is UTC
    assert before <= event.timestamp <= after


def test_non_utc_timestamp_is_converted_to_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    event = Event("t", None, timestamp=local)
    assert event.timestamp.tzinfo is UTC
    assert event.timestamp == local
    assert event.timestamp.hour == 10
    assert event.timestamp.microsecond == 123456


def test_naive_timestamp_is_rejected() -> None:
    with pytest.raises(InvalidEventError, match="timezone-aware"):
        Event("t", None, timestamp=datetime(2026, 1, 1, 0, 0))


def test_constructor_matches_the_seed_signature() -> None:
    meta = EventMetadata(correlation_id="c", producer="svc")
    event = Event("orders", {"id": 1}, "k", {"h": "v"}, "tenant-a", meta)
    assert (event.topic, event.payload, event.key) == ("orders", {"id": 1}, "k")
    assert dict(event.headers) == {"h": "v"}
    assert event.tenant_id == "tenant-a"
    assert event.metadata is meta
    assert event.delivery is None
    assert event.delivery_count == 0


def test_event_is_frozen() -> None:
    event = Event("t", {"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.topic = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = uuid.uuid4()  # type: ignore[misc]
    meta = EventMetadata()
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.producer = "x"  # type: ignore[misc]


def test_headers_are_read_only() -> None:
    event = Event("t", None, headers={"a": "1"})
    with pytest.raises(TypeError):
        event.headers["b"] = "2"  # type: ignore[index]
    assert dict(event.headers) == {"a": "1"}


def test_callers_headers_dict_is_copied_and_never_mutated() -> None:
    mine = {"a": "1"}
    event = Event("t", None, headers=mine)
    mine["b"] = "2"
    assert dict(event.headers) == {"a": "1"}
    extended = event.with_headers({"c": "3"})
    assert mine == {"a": "1", "b": "2"}
    assert dict(event.headers) == {"a": "1"}
    assert dict(extended.headers) == {"a": "1", "c": "3"}


def test_headers_none_means_empty() -> None:
    assert dict(Event("t", None, headers=None).headers) == {}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"topic": ""}, "topic"),
        ({"topic": 5}, "topic"),
        ({"key": 7}, "key"),
        ({"tenant_id": b"t"}, "tenant_id"),
        ({"metadata": {"correlation_id": "c"}}, "metadata"),
        ({"id": "not-a-uuid-object"}, "id"),
        ({"timestamp": "2026-01-01T00:00:00+00:00"}, "timestamp"),
        ({"headers": {"a": 1}}, "headers"),
        ({"headers": {1: "a"}}, "headers"),
    ],
)
def test_bad_field_types_raise_invalid_event_error(kwargs: dict[str, object], names: str) -> None:
    fields: dict[str, object] = {"topic": "t", "payload": None, **kwargs}
    with pytest.raises(InvalidEventError, match=names):
        Event(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["correlation_id", "causation_id", "producer", "schema_version"])
def test_bad_metadata_fields_raise_invalid_event_error(name: str) -> None:
    with pytest.raises(InvalidEventError, match=f"metadata.{name}"):
        EventMetadata(**{name: 123})  # type: ignore[arg-type]


def test_empty_content_type_is_rejected() -> None:
    with pytest.raises(InvalidEventError, match="content_type"):
        EventMetadata(content_type="")


def test_invalid_event_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Event("", None)


def test_equality_ignores_delivery_and_hash_is_by_id() -> None:
    event = Event("t", {"a": 1}, key="k")
    twin = Event("t", {"a": 1}, key="k", id=event.id, timestamp=event.timestamp)
    twin._received(3, "g", "m", None, None, None)
    assert twin.delivery == DeliveryInfo(count=3, group="g", message_id="m")
    assert twin.delivery_count == 3
    assert twin == event
    assert hash(twin) == hash(event) == hash(event.id)
    assert len({event, twin}) == 1
    assert Event("t", {"a": 1}, key="k") != event  # a different id is a different event


def test_equality_compares_content() -> None:
    event = Event("t", {"a": 1})
    other = Event("t", {"a": 2}, id=event.id, timestamp=event.timestamp)
    assert other != event


def test_unhashable_payload_still_hashes_by_id() -> None:
    event = Event("t", {"list": [1, 2]})
    assert hash(event) == hash(event.id)


def test_with_headers_keeps_identity_and_content() -> None:
    meta = EventMetadata(correlation_id="c")
    event = Event("t", {"a": 1}, "k", {"x": "1"}, "tenant", meta)
    copy = event.with_headers({"x": "2", "y": "3"})
    assert copy.id == event.id
    assert copy.timestamp == event.timestamp
    assert (copy.topic, copy.payload, copy.key, copy.tenant_id, copy.metadata) == (
        "t",
        {"a": 1},
        "k",
        "tenant",
        meta,
    )
    assert dict(copy.headers) == {"x": "2", "y": "3"}
    assert copy != event  # headers differ


def test_with_headers_validates_the_new_headers() -> None:
    with pytest.raises(InvalidEventError):
        Event("t", None).with_headers({"a": 1})  # type: ignore[dict-item]


def test_a_received_id_is_a_uuid_in_every_way_that_matters() -> None:
    """Decoded ids are parsed only when read; they must still behave as the UUID they spell."""
    import copy
    import pickle

    from dotmac.events import JsonCodec

    original = Event("t", {"a": 1})
    received = JsonCodec().decode(JsonCodec().encode(original)).id
    assert isinstance(received, uuid.UUID)
    assert received == original.id and original.id == received
    assert hash(received) == hash(original.id) and {original.id: 1}[received] == 1
    assert str(received) == str(original.id) and repr(received) == repr(original.id)
    assert received.int == original.id.int and received.hex == original.id.hex
    assert received.version == 4 and received.bytes == original.id.bytes
    for twin in (
        pickle.loads(pickle.dumps(received)),
        copy.copy(received),
        copy.deepcopy(received),
    ):
        assert twin == original.id and type(twin) is uuid.UUID
    assert sorted([received, uuid.UUID(int=0)])[0] == uuid.UUID(int=0)


@pytest.mark.parametrize(
    "text",
    [
        "12345678-1234-1234-1234-12345678901g",
        "12345678-1234-1234-1234-1234567890 1",
        "12345678-1234-1234-1234-+23456789012",
        "12345678_1234-1234-1234-123456789012",
        "not a uuid",
    ],
)
def test_a_received_id_that_is_no_uuid_is_a_decode_error(text: str) -> None:
    from dotmac.events import DecodeError, JsonCodec

    codec = JsonCodec()
    envelope = orjson.loads(codec.encode(Event("t", 1)))
    with pytest.raises(DecodeError, match="invalid field"):
        codec.decode(orjson.dumps({**envelope, "id": text}))


def test_an_uppercase_received_id_still_parses() -> None:
    from dotmac.events import JsonCodec

    codec = JsonCodec()
    event = Event("t", 1)
    envelope = orjson.loads(codec.encode(event))
    decoded = codec.decode(orjson.dumps({**envelope, "id": str(event.id).upper()}))
    assert decoded.id == event.id and str(decoded.id) == str(event.id)


def test_default_ids_are_random_version_4_uuids() -> None:
    ids = [Event("t", None).id for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert type(value) is uuid.UUID
        assert (value.version, value.variant) == (4, uuid.RFC_4122)
        assert uuid.UUID(str(value)) == value and value.is_safe == uuid.SafeUUID.unknown
    bits = [sum((v.int >> b) & 1 for v in ids) / len(ids) for b in range(0, 48)]
    assert all(0.4 < share < 0.6 for share in bits)  # the random part is random


def test_the_envelope_spells_id_and_timestamp_as_str_and_isoformat_do() -> None:
    from dotmac.events import JsonCodec

    for moment in (
        datetime(2026, 1, 2, 3, 4, 5, 600007, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(hours=-5))),
    ):
        event = Event("t", 1, timestamp=moment)
        envelope = orjson.loads(JsonCodec().encode(event))
        assert envelope["id"] == str(event.id)
        assert envelope["ts"] == event.timestamp.isoformat()
        assert datetime.fromisoformat(envelope["ts"]) == moment
