"""Bookkeeping for fault runs: what each publish call returned and what consumers handled.

Publishers go through :meth:`Outcomes.publish`, which does what the README tells a caller to
do with a PublishError: publish the same event again (same ``event.id``) after a short pause.
Every call's outcome is kept, so a run can say how many events were published, how many calls
failed and with which ``may_have_been_written``, how many were handled, how many twice, and
how many returned-then-lost (which must be none).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from dotmac.events import Event, EventBus, JsonCodec, PublishError

__all__ = ["Outcomes", "stream_counts"]


@dataclass
class Outcomes:
    """Per event id: publish calls that returned, errors by ``may_have_been_written``, and
    how often a consumer handled it."""

    returned: collections.Counter[str] = field(default_factory=collections.Counter)
    maybe_written: collections.Counter[str] = field(default_factory=collections.Counter)
    not_written: collections.Counter[str] = field(default_factory=collections.Counter)
    handled: collections.Counter[str] = field(default_factory=collections.Counter)
    slowest: float = 0.0  # longest single publish call, seconds
    causes: collections.Counter[str] = field(default_factory=collections.Counter)

    async def publish(
        self, bus: EventBus, event: Event, *, pause: float = 0.05, attempts: int = 100
    ) -> None:
        """Publish ``event`` until a call returns (at most ``attempts`` calls, then the last
        error is raised); each failed call is recorded."""
        key = str(event.id)
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                await bus.publish(event)
            except PublishError as exc:
                target = self.maybe_written if exc.may_have_been_written else self.not_written
                target[key] += 1
                self.causes[f"{exc.may_have_been_written}: {exc.__cause__!r}"[:120]] += 1
                self.slowest = max(self.slowest, time.monotonic() - started)
                if attempt == attempts:
                    raise
                await asyncio.sleep(pause)
                continue
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.returned[key] += 1
            return

    async def handle(self, event: Event) -> None:
        self.handled[str(event.id)] += 1

    def lost(self) -> list[str]:
        """Ids whose publish returned but that no consumer handled."""
        return [key for key in self.returned if self.handled[key] == 0]

    def report(self) -> dict[str, int]:
        return {
            "published": len(self.returned),
            "errors_maybe_written": sum(self.maybe_written.values()),
            "errors_not_written": sum(self.not_written.values()),
            "handled": sum(self.handled.values()),
            "handled_ids": len(self.handled),
            "duplicates": sum(n - 1 for n in self.handled.values() if n > 1),
            "lost": len(self.lost()),
        }


async def stream_counts(client: object, stream: str) -> collections.Counter[str]:
    """How often each event id is stored in a Redis stream (``client``: redis.asyncio.Redis)."""
    codec = JsonCodec()
    counts: collections.Counter[str] = collections.Counter()
    start = "-"
    while True:
        page = await client.xrange(stream, start, "+", count=5000)  # type: ignore[attr-defined]
        for _entry_id, fields in page:
            counts[str(codec.decode(fields[b"data"]).id)] += 1
        if len(page) < 5000:
            return counts
        start = "(" + page[-1][0].decode()
