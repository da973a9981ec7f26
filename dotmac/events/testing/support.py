"""What the conformance tests share: the bus factory protocol, the transport's capabilities and
a polling wait. Each part of the suite (``conformance.py`` and its mixins) imports it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from dotmac.events.bus import EventBus
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.errors import DecodeError
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer

__all__ = ["BusFactory", "Capabilities", "PoisonCodec", "wait_until"]


class BusFactory(Protocol):
    """Creates a new bus on the broker under test; ``codec``/``observer`` go to the bus."""

    def __call__(
        self, *, codec: Codec | None = None, observer: Observer | None = None
    ) -> Awaitable[EventBus]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What the transport under test can do, and how long its recovery paths take.

    ``handoff_timeout`` bounds how long unacked messages of a closed consumer take to reach the
    next consumer of the group (immediate in memory; the claim idle time on Redis).
    ``read_log``: the bus reads its log back (``read``, ``read_records``, ``replay``); a
    transport that cannot must raise UnsupportedOperation instead.
    ``patterns``: the bus can list its topics and so follow ``user.*``; give the bus a short
    ``pattern_refresh`` so new topics are found within ``timeout``. ``delays``: the bus can
    hold events until due (``publish(delay=...)``) and so retry without blocking.
    ``delete_records``: the bus deletes single records (a purged dead letter); Kafka cannot
    (DeleteRecords only deletes a partition's records before an offset). ``purge_all``: it
    deletes every record a topic holds (Tansu does not implement Kafka's DeleteRecords).
    """

    request_reply: bool = True
    read_log: bool = True
    patterns: bool = True
    delays: bool = True
    delete_records: bool = True
    purge_all: bool = True
    timeout: float = 15.0
    handoff_timeout: float = 15.0


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, message: str = "condition"
) -> None:
    """Poll ``predicate`` (plain or async) until true; fail the test with ``message`` after
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.01)


class PoisonCodec(JsonCodec):
    """Cannot decode events whose payload says ``{"poison": true}``: a message no one can read."""

    def decode(self, data: bytes) -> Event:
        event = super().decode(data)
        if isinstance(event.payload, dict) and event.payload.get("poison") is True:
            raise DecodeError("poison payload cannot be decoded")
        return event
