"""Codecs turn an Event into bytes and back; JsonCodec is the default, on orjson.

The JSON envelope is versioned (``"v": 1``) so the format can evolve without breaking
consumers that still run an older release::

    {"v": 1, "id": "<uuid>", "topic": "...", "key": null, "ts": "2026-01-01T00:00:00.000001+00:00",
     "tenant_id": null, "headers": {}, "meta": null, "payload": {...}}
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import orjson

from dotmac.events.errors import DecodeError, EncodeError, InvalidEventError
from dotmac.events.event import Event, EventMetadata

__all__ = ["Codec", "JsonCodec", "SchemaValidator"]

ENVELOPE_VERSION = 1
SchemaValidator = Callable[[str, Any], None]
"""``fn(topic, payload)`` that raises when the payload is not valid for the topic."""

_META_FIELDS = ("correlation_id", "causation_id", "producer", "content_type", "schema_version")


@runtime_checkable
class Codec(Protocol):
    """Turns events into bytes and back. Errors are EncodeError / DecodeError only."""

    content_type: str

    def encode(self, event: Event) -> bytes: ...

    def decode(self, data: bytes) -> Event: ...


def _find_unserialisable(value: Any, path: str) -> str | None:
    """Return the path of the first value orjson rejects, to name it in the error."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} (key {k!r} is not a str)"
            found = _find_unserialisable(v, f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _find_unserialisable(v, f"{path}[{i}]")
            if found:
                return found
        return None
    try:
        orjson.dumps(value)
    except TypeError:
        return f"{path} ({type(value).__name__})"
    return None


class JsonCodec:
    """Versioned JSON envelope on orjson, optionally checking payloads against a schema."""

    content_type = "application/json"

    def __init__(self, validator: SchemaValidator | None = None) -> None:
        self._validator = validator

    @classmethod
    def with_schema_validation(cls, validator: SchemaValidator) -> JsonCodec:
        """A codec that runs ``validator(topic, payload)`` on every encode and decode."""
        return cls(validator)

    def encode(self, event: Event) -> bytes:
        """Encode ``event``.

        Raises:
            EncodeError: a payload value is not JSON-serialisable (the error names it), or the
                schema validator rejected the payload.
        """
        if self._validator is not None:
            self._validate(event.topic, event.payload, EncodeError)
        meta = event.metadata
        event_id = event.id
        envelope = {
            "v": ENVELOPE_VERSION,
            # orjson writes a UUID and an aware datetime natively, in exactly the text of str()
            # and isoformat(); subclasses (freezegun's, pendulum's) it refuses, so they go as text.
            "id": event_id if type(event_id) is uuid.UUID else str(event_id),
            "topic": event.topic,
            "key": event.key,
            "ts": moment if type(moment := event.timestamp) is datetime else moment.isoformat(),
            "tenant_id": event.tenant_id,
            "headers": dict(headers) if (headers := event.headers) else {},
            "meta": None if meta is None else {f: getattr(meta, f) for f in _META_FIELDS},
            "payload": event.payload,
        }
        try:
            # orjson keeps a ~4 KiB allocation behind every result; a copy of the exact size
            # is what a buffer of waiting events (memory log, producer queue) should hold.
            return bytes(memoryview(orjson.dumps(envelope)))
        except TypeError as exc:
            found = (_find_unserialisable(v, name) for name, v in envelope.items())
            where = next((w for w in found if w), "payload")
            raise EncodeError(
                f"cannot encode event for topic {event.topic!r}: {where} is not JSON-serialisable"
            ) from exc

    def decode(self, data: bytes) -> Event:
        """Decode bytes produced by :meth:`encode`.

        Raises:
            DecodeError: the bytes are not JSON, not our envelope, or failed schema validation.
        """
        try:
            doc = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise DecodeError(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise DecodeError(f"expected a JSON object envelope, got {type(doc).__name__}")
        version = doc.get("v")
        if version != ENVELOPE_VERSION:
            raise DecodeError(f"unknown envelope version {version!r} (expected 1)")
        try:
            event = Event._from_wire(
                doc["topic"],
                doc["payload"],
                doc["key"],
                doc["headers"],
                doc["tenant_id"],
                None if (meta := doc["meta"]) is None else _decode_meta(meta),
                doc["id"],
                doc["ts"],
            )
        except KeyError as exc:
            raise DecodeError(f"envelope is missing field {exc.args[0]!r}") from exc
        except (InvalidEventError, ValueError, TypeError, AttributeError) as exc:
            raise DecodeError(f"envelope has an invalid field: {exc}") from exc
        if self._validator is not None:
            self._validate(event.topic, event.payload, DecodeError)
        return event

    def _validate(self, topic: str, payload: Any, error: type[EncodeError | DecodeError]) -> None:
        if self._validator is None:
            return
        try:
            self._validator(topic, payload)
        except Exception as exc:
            raise error(f"schema validation failed for topic {topic!r}: {exc}") from exc


def _decode_meta(raw: Any) -> EventMetadata:
    if not isinstance(raw, dict):
        raise TypeError("meta must be an object or null")
    return EventMetadata(**{f: raw[f] for f in _META_FIELDS if f in raw})
