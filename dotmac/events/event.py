"""The Event users publish and handlers receive."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, cast

from dotmac.events.errors import InvalidEventError

__all__ = ["DeliveryInfo", "Event", "EventMetadata"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


_uuid_int = uuid.UUID.__dict__["int"]
_uuid_is_safe = uuid.UUID.__dict__["is_safe"]
_UNKNOWN = uuid.SafeUUID.unknown  # an enum member lookup costs as much as the rest together


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The headers of every event without any: a read-only view of a dict nobody else holds."""


class _Generated:
    """Default of ``Event.id`` and ``Event.timestamp``: a new id, the time of creation."""

    def __repr__(self) -> str:
        return "<generated>"


_GENERATED: Any = _Generated()

_VERSION_4_MASK = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_4_BITS = (0x8000 << 48) | (4 << 76)  # RFC 4122 variant, version 4


def _new_id() -> uuid.UUID:
    """``uuid.uuid4()`` (16 bytes from os.urandom, version and variant set) at under half its
    cost: it runs for every event created."""
    value = object.__new__(uuid.UUID)
    _uuid_int.__set__(value, int.from_bytes(os.urandom(16)) & _VERSION_4_MASK | _VERSION_4_BITS)
    _uuid_is_safe.__set__(value, _UNKNOWN)
    return value


def _parse_id(text: str) -> uuid.UUID:
    """``uuid.UUID(text)`` at under half its cost when ``text`` is 32 digits once its hyphens
    are dropped (the canonical form): it runs for every event received. Any other text, valid
    or not, goes through ``uuid.UUID`` itself, so results and errors are the same."""
    digits = text.replace("-", "")
    if len(digits) == 32:
        try:
            number = int(digits, 16)  # what uuid.UUID does with the same 32 characters
        except ValueError:
            return uuid.UUID(text)
        value = object.__new__(uuid.UUID)
        _uuid_int.__set__(value, number)
        _uuid_is_safe.__set__(value, _UNKNOWN)
        return value
    return uuid.UUID(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventMetadata:
    """Who produced an event and how it relates to others (all optional)."""

    correlation_id: str | None = None
    causation_id: str | None = None
    producer: str | None = None
    content_type: str = "application/json"
    schema_version: str | None = None

    def __post_init__(self) -> None:
        for name in ("correlation_id", "causation_id", "producer", "schema_version"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidEventError(f"metadata.{name} must be a str or None, got {value!r}")
        if not isinstance(self.content_type, str) or not self.content_type:
            raise InvalidEventError("metadata.content_type must be a non-empty str")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryInfo:
    """How a received event reached this handler.

    ``count`` is 1 on the first delivery and grows by one each time the transport hands the
    same message out again (after a handler failure, or after a consumer died holding it).
    """

    count: int
    group: str
    message_id: str
    partition: int | None = None
    offset: int | None = None
    first_failure_at: datetime | None = None


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """An immutable event.

    ``headers`` is copied and frozen, so the caller's dict is never shared or mutated. ``payload``
    must be JSON-serialisable; that is checked when the event is encoded (at publish time).
    ``delivery`` is set only on events handed to a handler and takes no part in equality.
    """

    topic: str
    payload: Any
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tenant_id: str | None = None
    metadata: EventMetadata | None = None
    id: uuid.UUID = field(default_factory=_new_id, kw_only=True)
    timestamp: datetime = field(default_factory=_utc_now, kw_only=True)
    delivery: DeliveryInfo | None = field(default=None, kw_only=True, compare=False, repr=False)

    def __init__(
        self,
        topic: str,
        payload: Any,
        key: str | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
        tenant_id: str | None = None,
        metadata: EventMetadata | None = None,
        *,
        id: uuid.UUID = _GENERATED,
        timestamp: datetime = _GENERATED,
        delivery: DeliveryInfo | None = None,
    ) -> None:
        """The dataclass's own ``__init__`` would set each field with ``object.__setattr__``,
        twice the cost of a slot's setter; this one checks the fields first, then sets them.

        Raises:
            InvalidEventError: a field has the wrong type (the message names it).
        """
        if not isinstance(topic, str) or not topic:
            raise InvalidEventError(f"topic must be a non-empty str, got {topic!r}")
        if key is not None and not isinstance(key, str):
            raise InvalidEventError(f"key must be a str or None, got {type(key).__name__}")
        if tenant_id is not None and not isinstance(tenant_id, str):
            raise InvalidEventError(
                f"tenant_id must be a str or None, got {type(tenant_id).__name__}"
            )
        if metadata is not None and not isinstance(metadata, EventMetadata):
            raise InvalidEventError("metadata must be an EventMetadata or None")
        if id is _GENERATED:
            id = _new_id()
        elif not isinstance(id, uuid.UUID):
            raise InvalidEventError(f"id must be a uuid.UUID, got {type(id).__name__}")
        if timestamp is _GENERATED:
            timestamp = datetime.now(UTC)
        elif not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
            raise InvalidEventError("timestamp must be a timezone-aware datetime")
        elif timestamp.tzinfo is not UTC:
            timestamp = timestamp.astimezone(UTC)
        if headers is not _NO_HEADERS:
            headers = {} if headers is None else dict(headers)  # None is accepted too
            for name, value in headers.items():
                if not isinstance(name, str) or not isinstance(value, str):
                    raise InvalidEventError(f"headers must map str to str, got {name!r}: {value!r}")
            headers = MappingProxyType(headers) if headers else _NO_HEADERS
        put = _EVENT_SETTERS
        put[0](self, topic)
        put[1](self, payload)
        put[2](self, key)
        put[3](self, headers)
        put[4](self, tenant_id)
        put[5](self, metadata)
        put[6](self, id)
        put[7](self, timestamp)
        put[8](self, delivery)

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def delivery_count(self) -> int:
        """How many times this message was delivered (0 for an event that was never received)."""
        return 0 if self.delivery is None else self.delivery.count

    def with_headers(self, extra: Mapping[str, str]) -> Event:
        """A copy of this event (same id and timestamp) with ``extra`` merged into its headers."""
        merged = dict(self.headers)
        merged.update(extra)
        return Event(
            self.topic,
            self.payload,
            self.key,
            merged,
            self.tenant_id,
            self.metadata,
            id=self.id,
            timestamp=self.timestamp,
        )

    @classmethod
    def _from_wire(
        cls,
        topic: Any,
        payload: Any,
        key: Any,
        headers: Any,
        tenant_id: Any,
        metadata: EventMetadata | None,
        event_id: Any,
        timestamp: Any,
    ) -> Event:
        """An event decoded from the wire: the same checks as the constructor, done on the
        types JSON can produce, without the constructor's general-purpose conversions.

        Raises:
            InvalidEventError, ValueError, TypeError: a field is of the wrong type or form.
        """
        if type(topic) is not str or not topic:
            raise InvalidEventError(f"topic must be a non-empty str, got {topic!r}")
        if key is not None and type(key) is not str:
            raise InvalidEventError(f"key must be a str or None, got {type(key).__name__}")
        if tenant_id is not None and type(tenant_id) is not str:
            raise InvalidEventError(
                f"tenant_id must be a str or None, got {type(tenant_id).__name__}"
            )
        if headers is None:
            headers = {}
        elif type(headers) is not dict:
            raise InvalidEventError("headers must be a JSON object")
        for name, value in headers.items():
            if type(value) is not str:
                raise InvalidEventError(f"headers must map str to str, got {name!r}: {value!r}")
        if type(event_id) is not str:
            raise InvalidEventError(f"id must be a UUID string, got {type(event_id).__name__}")
        if type(timestamp) is not str:
            raise InvalidEventError("timestamp must be an ISO 8601 string")
        moment = datetime.fromisoformat(timestamp)
        if moment.tzinfo is None:
            raise InvalidEventError("timestamp must be a timezone-aware datetime")
        if moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        event: Any = _Unfrozen()
        event.topic = topic
        event.payload = payload
        event.key = key
        event.headers = MappingProxyType(headers) if headers else _NO_HEADERS
        event.tenant_id = tenant_id
        event.metadata = metadata
        event.id = _parse_id(event_id)
        event.timestamp = moment
        event.delivery = None
        event.__class__ = cls
        return cast(Event, event)

    def _received(
        self,
        count: int,
        group: str,
        message_id: str,
        partition: int | None,
        offset: int | None,
        first_failure_at: datetime | None,
    ) -> None:
        """Attach delivery info to a freshly decoded event that nobody else holds yet."""
        info: Any = _UnfrozenDeliveryInfo()
        info.count = count
        info.group = group
        info.message_id = message_id
        info.partition = partition
        info.offset = offset
        info.first_failure_at = first_failure_at
        info.__class__ = DeliveryInfo
        _set_delivery(self, info)


class _Unfrozen:
    """Event's slots without its frozen ``__setattr__``: the receive path fills one with plain
    attribute stores and then makes it the Event it is (the layouts are the same, so
    ``__class__`` can change). A store costs a fifth of a call to a slot's setter, and this
    runs once per field of every message received."""

    __slots__ = Event.__slots__


class _UnfrozenDeliveryInfo:
    """DeliveryInfo's slots, filled the same way (see _Unfrozen)."""

    __slots__ = DeliveryInfo.__slots__


_EVENT_SETTERS = tuple(Event.__dict__[name].__set__ for name in Event.__slots__)
_set_delivery = _EVENT_SETTERS[8]  # one store on a frozen event already made
