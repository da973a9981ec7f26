"""``dotmac-events publish --file``: a file of JSON lines published in batches.

One event per line, in two shapes. With TOPIC on the command line each line is the payload
object (``{"n": 1}``) and ``--key`` keys every event. Without TOPIC each line is an envelope
``{"topic": "orders", "payload": {"n": 1}, "key": "c1"}`` (``key`` optional, else ``--key``;
no other field). Blank lines are skipped.

Lines are read, checked and published in order, ``batch_size`` at a time with
``publish_many``. A bad line stops the run: the lines before it are published, nothing from
it on, so fixing that line and resuming from it (``tail -n +N``) publishes each event once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from dotmac.events.bus import EventBus
from dotmac.events.errors import EventBusError
from dotmac.events.event import Event

__all__ = ["ENVELOPE_FIELDS", "LineError", "parse_line", "publish_lines"]

ENVELOPE_FIELDS = ("topic", "payload", "key")


class LineError(Exception):
    """Line ``number`` is not an event; ``published`` events before it were sent."""

    def __init__(self, number: int, reason: str, published: int) -> None:
        super().__init__(f"line {number}: {reason}")
        self.number = number
        self.reason = reason
        self.published = published


def parse_line(raw: bytes, topic: str | None, key: str | None) -> Event:
    """The event one line describes (see the module docstring for the two shapes).

    Raises:
        ValueError: the line is not JSON, not an object, or not a valid event; the message
            says why in a few words.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"JSON is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"must be a JSON object, got {_json_type(data)}")
    if topic is None:
        unknown = sorted(set(data) - set(ENVELOPE_FIELDS))
        if unknown or "topic" not in data or "payload" not in data:
            raise ValueError(
                'without TOPIC each line must be {"topic": ..., "payload": {...}, "key": ...}'
                + (f"; unknown field {unknown[0]!r}" if unknown else "")
            )
        topic, payload = data["topic"], data["payload"]
        key = data.get("key", key)
        if not isinstance(payload, dict):
            raise ValueError(f'"payload" must be a JSON object, got {_json_type(payload)}')
    else:
        payload = data
    try:
        return Event(topic, payload, key=key)
    except EventBusError as exc:
        raise ValueError(str(exc)) from None


async def publish_lines(
    bus: EventBus,
    source: BinaryIO,
    *,
    topic: str | None,
    key: str | None,
    batch_size: int,
    advance: Callable[[int, int], None] = lambda events, size: None,
) -> int:
    """Publish every line of ``source``; returns how many events were published.

    ``advance(events, bytes)`` is called after each batch is accepted, with how many events
    it held and how many bytes of the source they took (for a progress bar).

    Raises:
        LineError: a bad line (the lines before it were published, nothing after).
        EventBusError: the bus refused a batch (earlier batches were published).
    """
    published = 0
    batch: list[Event] = []
    taken = 0

    async def flush() -> None:
        nonlocal published, taken
        if batch:
            await bus.publish_many(batch)
            published += len(batch)
            advance(len(batch), taken)
            batch.clear()
            taken = 0

    for number, raw in enumerate(source, start=1):
        taken += len(raw)
        if not raw.strip():
            continue
        try:
            batch.append(parse_line(raw, topic, key))
        except ValueError as exc:
            await flush()
            raise LineError(number, str(exc), published) from None
        if len(batch) >= batch_size:
            await flush()
    await flush()
    return published


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
