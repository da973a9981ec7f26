"""The Event users publish and handlers receive."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from dotmac.events.errors import InvalidEventError

__all__ = ["DeliveryInfo", "Event", "EventMetadata"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


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


@dataclass(frozen=True, slots=True)
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
    id: uuid.UUID = field(default_factory=uuid.uuid4, kw_only=True)
    timestamp: datetime = field(default_factory=_utc_now, kw_only=True)
    delivery: DeliveryInfo | None = field(default=None, kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not self.topic:
            raise InvalidEventError(f"topic must be a non-empty str, got {self.topic!r}")
        if self.key is not None and not isinstance(self.key, str):
            raise InvalidEventError(f"key must be a str or None, got {type(self.key).__name__}")
        if self.tenant_id is not None and not isinstance(self.tenant_id, str):
            raise InvalidEventError(
                f"tenant_id must be a str or None, got {type(self.tenant_id).__name__}"
            )
        if self.metadata is not None and not isinstance(self.metadata, EventMetadata):
            raise InvalidEventError("metadata must be an EventMetadata or None")
        if not isinstance(self.id, uuid.UUID):
            raise InvalidEventError(f"id must be a uuid.UUID, got {type(self.id).__name__}")
        if not isinstance(self.timestamp, datetime) or self.timestamp.tzinfo is None:
            raise InvalidEventError("timestamp must be a timezone-aware datetime")
        if self.timestamp.tzinfo is not UTC:
            object.__setattr__(self, "timestamp", self.timestamp.astimezone(UTC))
        headers = {} if self.headers is None else dict(self.headers)  # None is accepted too
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise InvalidEventError(f"headers must map str to str, got {name!r}: {value!r}")
        object.__setattr__(self, "headers", MappingProxyType(headers))

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

    def _received(self, delivery: DeliveryInfo) -> Event:
        """Attach delivery info to a freshly decoded event that nobody else holds yet."""
        object.__setattr__(self, "delivery", delivery)
        return self
