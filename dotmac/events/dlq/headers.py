"""The failure headers a dead letter carries, named as Spring Kafka's dead-letter publishing names
them, so a Java service (or kcat, or redis-cli) reads a dead letter without our code.

A dead letter is the original record, unchanged (same bytes, same key, same transport headers),
plus these headers. Where Spring Kafka has a header for a fact, its name and value encoding are
used (``kafka_dlt-*``; Spring writes partition and offset as big-endian binary ints, and so do
we, on Kafka only, where they exist); facts Spring has no header for use ``dotmac-dlt-*`` with
text values. A replayed record drops the failure headers and carries ``dotmac-replayed-from`` and
``dotmac-replay-id`` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

__all__ = [
    "ATTEMPTS",
    "EXCEPTION_FQCN",
    "EXCEPTION_MESSAGE",
    "FAILURE_HEADERS",
    "FIRST_FAILURE_AT",
    "LAST_FAILURE_AT",
    "MAX_MESSAGE_LENGTH",
    "ORIGINAL_CONSUMER_GROUP",
    "ORIGINAL_ID",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TOPIC",
    "REPLAYED_FROM",
    "REPLAY_ID",
    "error_class",
    "failure_headers",
    "header_map",
    "is_shown",
    "shown_headers",
    "without_failure_headers",
]

ORIGINAL_TOPIC = "kafka_dlt-original-topic"
"""UTF-8: the topic the record failed on (Spring Kafka's name)."""
ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
"""UTF-8: the consumer group that gave up on it (Spring Kafka's name)."""
EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
"""UTF-8: the error's class, ``module.QualName`` (``ValueError`` for builtins) (Spring's name)."""
EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
"""UTF-8: the error's message, at most :data:`MAX_MESSAGE_LENGTH` characters (Spring's name)."""
ORIGINAL_PARTITION = "kafka_dlt-original-partition"
"""Kafka only: the original partition, a 4-byte big-endian int (Spring's name and encoding)."""
ORIGINAL_OFFSET = "kafka_dlt-original-offset"
"""Kafka only: the original offset, an 8-byte big-endian int (Spring's name and encoding)."""
ATTEMPTS = "dotmac-dlt-attempts"
"""Decimal text: how many times the record was delivered before it was given up."""
FIRST_FAILURE_AT = "dotmac-dlt-first-failure-at"
"""ISO 8601, UTC: when its first attempt failed."""
LAST_FAILURE_AT = "dotmac-dlt-last-failure-at"
"""ISO 8601, UTC: when it was dead-lettered."""
ORIGINAL_ID = "dotmac-dlt-original-id"
"""The transport's id of the original record (memory offset, Redis entry id,
``topic:partition:offset`` on Kafka)."""
REPLAYED_FROM = "dotmac-replayed-from"
"""On a replayed record: ``<dead-letter topic>@<position>`` of the dead letter it came from."""
REPLAY_ID = "dotmac-replay-id"
"""On a replayed record: the id of the replay run that sent it."""

FAILURE_HEADERS = frozenset(
    {
        ORIGINAL_TOPIC,
        ORIGINAL_CONSUMER_GROUP,
        EXCEPTION_FQCN,
        EXCEPTION_MESSAGE,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ATTEMPTS,
        FIRST_FAILURE_AT,
        LAST_FAILURE_AT,
        ORIGINAL_ID,
    }
)
_SHOWN_PREFIXES = ("kafka_dlt-", "dotmac-dlt-", "dotmac-replay")
_BINARY = {ORIGINAL_PARTITION, ORIGINAL_OFFSET}

MAX_MESSAGE_LENGTH = 2000
"""Characters of an error message kept in a dead letter; longer ones are cut, ending in ``...``."""


def error_class(error: BaseException) -> str:
    """``module.QualName`` of the error's class, bare for builtins (``ValueError``)."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - 3] + "..."


def failure_headers(
    *,
    topic: str,
    group: str,
    error: BaseException,
    attempts: int,
    first_failure_at: datetime,
    last_failure_at: datetime,
    original_id: str,
    partition: int | None = None,
    offset: int | None = None,
) -> list[tuple[str, bytes]]:
    """The headers added to the original record to make it a dead letter."""
    headers = [
        (ORIGINAL_TOPIC, topic.encode()),
        (ORIGINAL_CONSUMER_GROUP, group.encode()),
        (EXCEPTION_FQCN, error_class(error).encode()),
        (EXCEPTION_MESSAGE, _bounded(str(error) or repr(error)).encode(errors="replace")),
        (ATTEMPTS, str(attempts).encode()),
        (FIRST_FAILURE_AT, first_failure_at.isoformat().encode()),
        (LAST_FAILURE_AT, last_failure_at.isoformat().encode()),
        (ORIGINAL_ID, original_id.encode(errors="replace")),
    ]
    if partition is not None and offset is not None:
        headers.append((ORIGINAL_PARTITION, partition.to_bytes(4, "big", signed=True)))
        headers.append((ORIGINAL_OFFSET, offset.to_bytes(8, "big", signed=True)))
    return headers


def is_shown(name: str) -> bool:
    """Whether ``name`` is a dead-letter or replay header (handlers see those)."""
    return name.startswith(_SHOWN_PREFIXES)


def without_failure_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The record's own headers: a dead letter's headers less the failure and replay ones."""
    return [(n, v) for n, v in headers if not n.startswith(_SHOWN_PREFIXES)]


def _text(name: str, value: bytes) -> str:
    if name in _BINARY and len(value) in (4, 8):
        return str(int.from_bytes(value, "big", signed=True))
    return value.decode(errors="replace")


def header_map(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Headers as text (the last value of a repeated name wins; Spring's binary ints as
    decimal)."""
    return {name: _text(name, value) for name, value in headers}


def shown_headers(headers: Sequence[tuple[str, bytes]]) -> Mapping[str, str] | None:
    """The dead-letter and replay headers of a received record as text, for the handler's
    ``event.headers``; None when it has none (the common case: one pass over a few names)."""
    shown = None
    for name, value in headers:
        if name.startswith(_SHOWN_PREFIXES):
            if shown is None:
                shown = {}
            shown[name] = _text(name, value)
    return shown
