"""DLQEntry: the typed view of one dead letter, built from the record on the dead-letter topic.

A dead letter is the original record (its bytes, key and transport headers) plus the failure
headers of :mod:`dotmac.events.dlq.headers`. Dead-letter topics written before that format held
a wrapper event (``DLQEntry.to_event``: the original as base64 in a JSON payload); those are still
read, so old entries can be listed and replayed.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import dotmac.events.dlq.headers as h
from dotmac.events.bus import EventBus, ReadRecord
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.errors import DecodeError, UnsupportedOperation
from dotmac.events.event import Event

__all__ = ["DLQ_HEADER", "DLQEntry"]

DLQ_HEADER = h.ORIGINAL_TOPIC
"""The header naming the original topic on every dead letter (Spring Kafka's
``kafka_dlt-original-topic``)."""

_LEGACY_HEADER = "dotmac-dlq-original-topic"  # on wrapper events of the old format


def _when(value: str | None, fallback: datetime) -> datetime:
    if value is None:
        return fallback
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return fallback
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class DLQEntry:
    """One dead-lettered message.

    ``original_data`` is the message exactly as it was received; ``original_event`` is it decoded,
    or None when it could not be decoded (then ``error_type`` is ``"DecodeError"``).
    ``attempts`` is how many times it was delivered; ``retry_count`` is ``attempts - 1``.
    ``id`` is the dead letter's position on its topic (what ``DeadLetters.get`` takes).
    ``error_class`` is the error's full class name; ``original_headers`` the original record's
    own transport headers (kept on replay); ``replayed_at`` is set by ``DeadLetters`` on entries
    it has replayed.
    """

    original_topic: str
    group: str
    error: str
    error_type: str
    attempts: int
    first_failure_at: datetime
    last_failure_at: datetime
    original_data: bytes
    original_event: Event | None = None
    original_key: str | None = None
    id: str | None = None
    error_class: str | None = None
    original_headers: tuple[tuple[str, bytes], ...] = field(default=(), compare=False)
    timestamp: datetime | None = None
    replayed_at: datetime | None = None

    @property
    def retry_count(self) -> int:
        return max(self.attempts - 1, 0)

    @classmethod
    def for_failure(
        cls,
        *,
        topic: str,
        group: str,
        data: bytes,
        error: BaseException,
        attempts: int,
        first_failure_at: datetime | None,
        event: Event | None,
        key: str | None,
    ) -> DLQEntry:
        now = datetime.now(UTC)
        return cls(
            original_topic=topic,
            group=group,
            error=str(error) or repr(error),
            error_type=type(error).__name__,
            error_class=h.error_class(error),
            attempts=attempts,
            first_failure_at=first_failure_at or now,
            last_failure_at=now,
            original_data=data,
            original_event=event,
            original_key=event.key if event is not None else key,
        )

    # --- the record format ---------------------------------------------------------------------

    @classmethod
    def from_record(cls, record: ReadRecord, codec: Codec | None = None) -> DLQEntry:
        """The entry a dead-letter topic's record stands for (``bus.read_records``).

        Raises:
            DecodeError: the record is not a dead letter (neither format).
        """
        return cls.from_parts(
            record.data,
            record.headers,
            key=record.key,
            position=record.position,
            timestamp=record.timestamp,
            codec=codec,
        )

    @classmethod
    def from_parts(
        cls,
        data: bytes,
        headers: Sequence[tuple[str, bytes]],
        *,
        key: str | None = None,
        position: str | None = None,
        timestamp: datetime | None = None,
        codec: Codec | None = None,
    ) -> DLQEntry:
        """The entry for a record's bytes, transport headers, key and position.

        Raises:
            DecodeError: the record is not a dead letter (neither format).
        """
        codec = codec or JsonCodec()
        found = h.header_map(headers)
        topic = found.get(h.ORIGINAL_TOPIC)
        if topic is None:  # the old wrapper format, or not a dead letter at all
            try:
                wrapper = codec.decode(data)
            except DecodeError as exc:
                raise DecodeError(f"not a dead-letter entry: {exc}") from exc
            entry = cls.from_event(wrapper, codec)
            return replace(entry, id=position or entry.id, timestamp=timestamp)
        original = _decoded(data, codec)
        fallback = timestamp or datetime.now(UTC)
        try:
            attempts = int(found.get(h.ATTEMPTS, "1"))
        except ValueError:
            attempts = 1
        full = found.get(h.EXCEPTION_FQCN, "")
        return cls(
            original_topic=topic,
            group=found.get(h.ORIGINAL_CONSUMER_GROUP, ""),
            error=found.get(h.EXCEPTION_MESSAGE, ""),
            error_type=full.rpartition(".")[2],
            error_class=full or None,
            attempts=attempts,
            first_failure_at=_when(found.get(h.FIRST_FAILURE_AT), fallback),
            last_failure_at=_when(found.get(h.LAST_FAILURE_AT), fallback),
            original_data=data,
            original_event=original,
            original_key=original.key if original is not None else key,
            id=position,
            original_headers=tuple(h.without_failure_headers(headers)),
            timestamp=timestamp,
        )

    def failure_headers(self) -> list[tuple[str, bytes]]:
        """The failure headers of this entry as written on a dead letter."""
        return [
            (h.ORIGINAL_TOPIC, self.original_topic.encode()),
            (h.ORIGINAL_CONSUMER_GROUP, self.group.encode()),
            (h.EXCEPTION_FQCN, (self.error_class or self.error_type).encode()),
            (h.EXCEPTION_MESSAGE, self.error.encode(errors="replace")),
            (h.ATTEMPTS, str(self.attempts).encode()),
            (h.FIRST_FAILURE_AT, self.first_failure_at.isoformat().encode()),
            (h.LAST_FAILURE_AT, self.last_failure_at.isoformat().encode()),
        ]

    # --- the old wrapper format ------------------------------------------------------------------

    def to_event(self, dlq_topic: str) -> Event:
        """The wrapper event of the old format (base64 original in a JSON payload): how a
        transport that cannot write record headers still dead-letters."""
        payload = {
            "original_topic": self.original_topic,
            "group": self.group,
            "error": self.error,
            "error_type": self.error_type,
            "attempts": self.attempts,
            "first_failure_at": self.first_failure_at.isoformat(),
            "last_failure_at": self.last_failure_at.isoformat(),
            "original_key": self.original_key,
            "original_data": base64.b64encode(self.original_data).decode("ascii"),
        }
        tenant = self.original_event.tenant_id if self.original_event else None
        return Event(
            dlq_topic,
            payload,
            key=self.original_key,
            headers={_LEGACY_HEADER: self.original_topic},
            tenant_id=tenant,
        )

    @classmethod
    def from_event(cls, event: Event, codec: Codec | None = None) -> DLQEntry:
        """Read an entry back from an event received on a dead-letter topic: a dead letter (its
        failure headers are in ``event.headers``) or a wrapper event of the old format.

        Raises:
            DecodeError: the event is not a dead-letter entry.
        """
        position = event.delivery.message_id if event.delivery is not None else None
        if h.ORIGINAL_TOPIC in event.headers:
            shown = [(n, v.encode()) for n, v in event.headers.items()]
            if isinstance(event.payload, bytes):  # as create_dlq_consumer receives it
                data = event.payload
            else:  # decoded already: encode the original (its own headers) again
                own = {n: v for n, v in event.headers.items() if not h.is_shown(n)}
                original = _with_headers(event, own, topic=event.headers[h.ORIGINAL_TOPIC])
                data = (codec or JsonCodec()).encode(original)
            return cls.from_parts(data, shown, key=event.key, position=position, codec=codec)
        if isinstance(event.payload, bytes):  # raw bytes of a wrapper event (a transport that
            # cannot write records with headers still dead-letters in the old format)
            try:
                event = (codec or JsonCodec()).decode(event.payload)
            except DecodeError as exc:
                raise DecodeError(f"not a dead-letter entry: {exc}") from exc
        return cls._from_wrapper(event, codec, position)

    @classmethod
    def _from_wrapper(cls, event: Event, codec: Codec | None, position: str | None) -> DLQEntry:
        p = event.payload
        try:
            data = base64.b64decode(p["original_data"], validate=True)
            entry = cls(
                original_topic=p["original_topic"],
                group=p["group"],
                error=p["error"],
                error_type=p["error_type"],
                attempts=int(p["attempts"]),
                first_failure_at=datetime.fromisoformat(p["first_failure_at"]),
                last_failure_at=datetime.fromisoformat(p["last_failure_at"]),
                original_data=data,
                original_key=p.get("original_key"),
                id=position or str(event.id),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"not a dead-letter entry: {exc!r}") from exc
        return replace(entry, original_event=_decoded(data, codec or JsonCodec()))

    async def replay(self, bus: EventBus) -> None:
        """Publish the original event again (same id) to its original topic, marked with a
        ``dotmac-replay-id`` header of its own: a broker that drops a repeated event id as a
        duplicate (NATS JetStream within its duplicate window) tells a replay from a retry by it.

        Raises:
            UnsupportedOperation: the original could not be decoded, so it cannot be republished.
        """
        if self.original_event is None:
            raise UnsupportedOperation(
                f"dead letter {self.id} holds undecodable bytes ({self.error}); fix and republish"
            )
        await bus.publish(self.original_event.with_headers({h.REPLAY_ID: uuid.uuid4().hex}))


def _with_headers(event: Event, headers: dict[str, str], *, topic: str | None = None) -> Event:
    return Event(
        topic or event.topic,
        event.payload,
        event.key,
        headers,
        event.tenant_id,
        event.metadata,
        id=event.id,
        timestamp=event.timestamp,
    )


def _decoded(data: bytes, codec: Codec) -> Event | None:
    try:
        return codec.decode(data)
    except DecodeError:
        return None
