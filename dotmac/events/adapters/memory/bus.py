"""MemoryBus: the EventBus contract over the in-process broker in ``log.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime

from dotmac.events.adapters.memory.config import MemoryConfig
from dotmac.events.adapters.memory.delayed import DelayedEvents
from dotmac.events.adapters.memory.log import Group, Topic
from dotmac.events.adapters.memory.reader import read_log
from dotmac.events.adapters.memory.receiver import MemoryReceiver
from dotmac.events.bus import BacklogStats, HealthStatus
from dotmac.events.codec import Codec
from dotmac.events.engine import TransportBus
from dotmac.events.errors import ConfigurationError, PublishError
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer
from dotmac.events.transport import LogRecord, Receiver

__all__ = ["MemoryBus", "create_memory_bus"]


class MemoryBus(TransportBus):
    """The in-process bus. Construct it anywhere; it binds to the event loop that first uses it."""

    adapter = "memory"

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        codec: Codec | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config or MemoryConfig()
        super().__init__(codec=codec, observer=observer, close_timeout=self.config.close_timeout)
        self._topics: dict[str, Topic] = {}
        self._delayed = DelayedEvents(self._release_delayed)
        self._owns_delayed = True

    def client(self, *, codec: Codec | None = None, observer: Observer | None = None) -> MemoryBus:
        """Another bus on this bus's in-process broker, as a second process connects to the
        same Redis: it shares topics and groups, and has its own subscriptions and close()."""
        other = MemoryBus(self.config, codec=codec, observer=observer)
        other._topics = self._topics
        other._topic_watchers = self._topic_watchers  # pattern subscriptions see every client
        other._delayed, other._owns_delayed = self._delayed, False
        return other

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = Topic(
                self.config.max_queue_size, keep_all=self.config.enable_persistence
            )
            self._topic_appeared()
        return topic

    async def _list_topics(self) -> list[str]:
        return list(self._topics)

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        topics = self._topics
        for event, data in batch:
            topic = topics.get(event.topic) or self._topic(event.topic)
            # Publishers already queued hold no room: any room there is has been promised to them.
            if topic.groups and (topic.publishers or not topic.has_room()):
                await self._wait_for_room(event.topic, topic)
            topic.append(data, event.key)

    async def _send_raw(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        state = self._topic(topic)
        if state.groups and (state.publishers or not state.has_room()):
            await self._wait_for_room(topic, state)
        state.append_record(data, key, tuple(headers))

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int:
        state = self._topics.get(topic)
        if state is None:
            return 0
        return state.purge(int(p) for p in positions if p.isascii() and p.isdigit())

    async def _delete_all(self, topic: str) -> None:
        state = self._topics.get(topic)
        if state is not None:
            state.purge(range(state.base, state.end))

    async def _wait_for_room(self, name: str, topic: Topic) -> None:
        waiter = topic.wait_for_room(self.config.publish_timeout)
        try:
            granted = await waiter
        except BaseException:
            topic.forget(waiter)
            raise
        if not granted:
            raise PublishError(
                f"memory topic {name!r} is full: {topic.unconsumed()} events not yet acked by "
                f"every group (max_queue_size={topic.limit}) for {self.config.publish_timeout}s"
            )
        topic.granted -= 1

    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int, from_beginning: bool = False
    ) -> Receiver:
        state = self._topic(topic)
        existing = state.groups.get(group)
        if existing is None:
            latest = private or self.config.new_group_start == "latest"
            start_latest = latest and not from_beginning
            existing = state.groups[group] = Group(
                state.end if start_latest else state.base, private=private
            )
            # Joining only lowers the floor (the first group sets it): nothing to trim or grant.
            state.floor = existing.low if len(state.groups) == 1 else min(state.floor, existing.low)
        existing.members += 1
        return MemoryReceiver(state, group, existing)

    def _now(self) -> float:
        return self._delayed.now()

    async def _schedule(self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float) -> None:
        self._delayed.hold(topic, [(data, event.key) for event, data in batch], due)

    def _release_delayed(self, topic: str, data: bytes, key: str | None) -> None:
        # A due event is appended even to a full topic: it was accepted when it was published.
        self._topic(topic).append(data, key)

    async def advance(self, seconds: float) -> int:
        """Move this broker's clock ``seconds`` forward (for tests): delayed events that became
        due are appended to their topics now. Returns how many were released.

        Raises:
            ConfigurationError: ``seconds`` is negative (the clock only moves forward).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ConfigurationError("seconds", f"must be >= 0, got {seconds!r}")
        released = self._delayed.advance(seconds)
        await asyncio.sleep(0)  # let woken receivers take them
        return released

    @property
    def delayed(self) -> int:
        """Delayed events held and not yet due."""
        return len(self._delayed)

    async def _close_transport(self) -> None:
        if self._owns_delayed:
            self._delayed.stop()

    async def _drop_topic(self, topic: str) -> None:
        self._topics.pop(topic, None)

    async def health(self) -> HealthStatus:
        started = time.perf_counter()
        return HealthStatus(
            healthy=not self.closed,
            adapter=self.adapter,
            latency_ms=(time.perf_counter() - started) * 1000,
            details={"topics": len(self._topics)},
        )

    async def stats(
        self, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> BacklogStats:
        """Every figure is exact; ``oldest_pending_age`` counts from the first hand-out of the
        oldest message not yet acked (after a ``rewind``, from its first hand-out since)."""
        state = self._topics.get(topic)
        dlq = self._topics.get(self._stats_dlq_topic(topic, group, dlq_topic))
        target = state.groups.get(group) if state is not None and group is not None else None
        since = None if target is None else target.oldest_pending_since()
        return BacklogStats(
            topic=topic,
            group=group,
            length=0 if state is None else state.end - state.base,
            lag=None
            if state is None or target is None
            else state.end - target.cursor + len(target.returned),
            pending=None if target is None else len(target.counts) - len(target.returned),
            oldest_pending_age=None if since is None else time.monotonic() - since,
            dlq_depth=0 if dlq is None else dlq.end - dlq.base,
        )

    def _read_log(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]:
        return read_log(self._topics, self._topic, topic, since=since, until=until, follow=follow)

    def history(self, topic: str) -> list[Event]:
        """Every event still held for ``topic`` in publish order (all of them with persistence)."""
        state = self._topics.get(topic)
        return [] if state is None else [self.codec.decode(data) for data in state.held()]

    def rewind(self, topic: str, group: str, offset: int = 0) -> None:
        """Move ``group``'s cursor back to ``offset`` so it handles the held history again.

        Raises:
            ConfigurationError: the group is unknown or ``offset`` is no longer held.
        """
        state = self._topics.get(topic)
        target = state.groups.get(group) if state else None
        if state is None or target is None:
            raise ConfigurationError("group", f"no group {group!r} on topic {topic!r}")
        if not state.base <= offset <= state.end:
            raise ConfigurationError(
                "offset", f"must be within the held log [{state.base}, {state.end}], got {offset}"
            )
        target.cursor = offset
        target.low = target.floor()
        state.refloor()
        state.pass_on(target)


def create_memory_bus(
    config: MemoryConfig | None = None,
    *,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> MemoryBus:
    """Create an in-process bus; safe to call outside a running event loop."""
    return MemoryBus(config, codec=codec, observer=observer)
