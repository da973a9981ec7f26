"""The receive path's shortcuts must agree with the general code they stand in for."""

from __future__ import annotations

import uuid

import pytest

from dotmac.events.event import _parse_id

_SAMPLE = uuid.UUID("1b4e28ba-2fa1-41d2-883f-0016d3cca427")


@pytest.mark.parametrize(
    "text",
    [
        str(_SAMPLE),
        str(_SAMPLE).upper(),
        _SAMPLE.hex,
        "{" + str(_SAMPLE) + "}",
        "urn:uuid:" + str(_SAMPLE),
        "1b4e28ba2fa1-41d2-883f-0016d3cca427----",
        "+" + "f" * 31,
        " " + "a" * 31,
        "1_2" + "0" * 29,
        "g" * 32,
        "a" * 31 + "-",
        "12345678-1234-1234-1234-+23456789012",
        "",
        "not a uuid",
    ],
)
def test_parse_id_gives_what_uuid_gives(text: str) -> None:
    try:
        expected: object = uuid.UUID(text)
    except ValueError as exc:
        with pytest.raises(ValueError) as raised:
            _parse_id(text)
        assert str(raised.value) == str(exc)
        return
    parsed = _parse_id(text)
    assert type(parsed) is uuid.UUID
    assert parsed == expected and parsed.is_safe == uuid.SafeUUID.unknown
    assert str(parsed) == str(expected) and hash(parsed) == hash(expected)


def test_a_decoded_event_is_a_frozen_event_like_a_constructed_one() -> None:
    import dataclasses

    from dotmac.events import DeliveryInfo, Event, EventMetadata, JsonCodec

    codec = JsonCodec()
    sent = Event("t", {"a": [1]}, "k", {"h": "v"}, "tenant", EventMetadata(producer="p"))
    received = codec.decode(codec.encode(sent))
    received._received(3, "g", "m-1", 2, 7, None)
    assert type(received) is Event and received == sent and hash(received) == hash(sent)
    assert type(received.delivery) is DeliveryInfo
    assert received.delivery == DeliveryInfo(
        count=3, group="g", message_id="m-1", partition=2, offset=7
    )
    assert [f.name for f in dataclasses.fields(received)] == [
        f.name for f in dataclasses.fields(sent)
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        received.topic = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        received.delivery.count = 1  # type: ignore[misc]
    assert dataclasses.replace(received, topic="u").topic == "u"
    assert repr(received) == repr(sent)


@pytest.mark.parametrize(("name", "value"), [("id", None), ("timestamp", None)])
def test_an_explicit_none_id_or_timestamp_is_refused_not_generated(name: str, value: None) -> None:
    from dotmac.events import Event, InvalidEventError

    with pytest.raises(InvalidEventError, match=name):
        Event("t", 1, **{name: value})  # type: ignore[arg-type]


def test_the_constructor_copies_checks_and_freezes_headers_of_any_mapping() -> None:
    from types import MappingProxyType

    from dotmac.events import Event, InvalidEventError

    plain = Event("t", 1)
    assert dict(plain.headers) == {}
    assert Event("t", 1, headers=None).headers == {}  # type: ignore[arg-type]
    given = {"a": "1"}
    event = Event("t", 1, headers=MappingProxyType(given))
    given["b"] = "2"
    assert dict(event.headers) == {"a": "1"}
    assert Event("t", 1, headers=plain.headers).headers == {}
    with pytest.raises(InvalidEventError, match="headers"):
        Event("t", 1, headers=MappingProxyType({"a": 1}))  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        plain.headers["x"] = "y"  # type: ignore[index]
