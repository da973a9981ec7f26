"""A subscription to a topic pattern: one ordinary subscription per matching topic, opened as
topics are found.

Discovery asks the transport for its topic names (memory's own table, SCAN on Redis, the
cluster's metadata on Kafka) when the subscription starts and then every ``refresh`` seconds,
or at once when the transport says a topic appeared (memory does). Topics present at the start
join as a plain subscription would (a private group from the end, a named group per the
transport's ``new_group_start``). A topic found later joins from its beginning: it appeared
after the subscription was made, so all of it is news, and the events that created it are not
skipped. Each concrete topic keeps the engine's usual guarantees (its own lanes, per-key order,
acks, retries and its own dead-letter topic), and ``event.topic`` names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import Subscription
from dotmac.events.patterns import TopicPattern

__all__ = ["PatternSubscription"]

logger = logging.getLogger("dotmac.events")

_DISCOVERY_BACKOFF = ExponentialBackoff(base_ms=200, max_ms=10_000)

OpenTopic = Callable[[str, bool], Awaitable[Subscription]]
"""``open_topic(name, from_beginning)``: subscribe the pattern's handler to one topic."""


class PatternSubscription(Subscription):
    """Follows every topic ``pattern`` matches, now and later. Created by ``subscribe``."""

    def __init__(
        self,
        *,
        pattern: TopicPattern,
        group: str,
        list_topics: Callable[[], Awaitable[Iterable[str]]],
        open_topic: OpenTopic,
        refresh: float,
        excluded: Callable[[str], bool],
        report: Callable[[str, BaseException], None],
        on_closed: Callable[[Subscription], None],
    ) -> None:
        self.topic = pattern.text
        self.group = group
        self.pattern = pattern
        self._list_topics = list_topics
        self._open_topic = open_topic
        self._refresh = refresh
        self._excluded = excluded
        self._report = report
        self._on_closed = on_closed
        self.subscriptions: dict[str, Subscription] = {}
        self._changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def topics(self) -> list[str]:
        """The concrete topics followed so far, in the order they were joined."""
        return list(self.subscriptions)

    async def start(self) -> None:
        """Join every matching topic that exists now, then watch for new ones."""
        await self._discover(from_beginning=False)
        self._watcher = asyncio.create_task(self._watch(), name=f"dotmac-pattern-{self.topic}")

    def topics_changed(self) -> None:
        """Look for new topics now instead of at the next refresh."""
        self._changed.set()

    async def _discover(self, *, from_beginning: bool) -> None:
        found = [
            name
            for name in sorted(await self._list_topics())
            if name not in self.subscriptions
            and self.pattern.matches(name)
            and not self._excluded(name)
        ]
        if self._stopping or not found:
            return
        # Joined side by side: on Kafka each join is a group rebalance of a few seconds.
        joined = await asyncio.gather(
            *(self._open_topic(name, from_beginning) for name in found), return_exceptions=True
        )
        failed: BaseException | None = None
        for name, result in zip(found, joined, strict=True):
            if isinstance(result, BaseException):
                failed = failed or result
            else:
                self.subscriptions[name] = result  # closed by close(), even if one failed
        if failed is not None:
            raise failed

    async def _watch(self) -> None:
        failures = 0
        while not self._stopping:
            delay = self._refresh if not failures else _DISCOVERY_BACKOFF.delay(failures)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._changed.wait()
            self._changed.clear()
            if self._stopping:
                return
            try:
                await self._discover(from_beginning=True)
            except Exception as exc:  # the broker may be away; the topics joined keep running
                failures += 1
                logger.warning(
                    "pattern %s, group %s: topic discovery failed: %r", self.topic, self.group, exc
                )
                self._report("topic discovery", exc)
            else:
                failures = 0

    async def close(self, timeout: float | None = None) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(timeout))
        await asyncio.shield(self._close_task)

    async def _close(self, timeout: float | None) -> None:
        self._stopping = True
        self._changed.set()
        if self._watcher is not None:
            # A join in progress finishes (so its receiver is closed below, not leaked) unless
            # the broker hangs it past the timeout.
            _, late = await asyncio.wait([self._watcher], timeout=timeout or 10.0)
            for task in late:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
        await asyncio.gather(*(s.close(timeout) for s in list(self.subscriptions.values())))
        self._closed = True
        self._on_closed(self)
