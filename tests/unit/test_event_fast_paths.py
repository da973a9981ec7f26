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
