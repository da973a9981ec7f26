"""In-process transport that behaves like a broker: a log per topic and a cursor per group.

Each topic is an append-only log. Each consumer group has a cursor (the next offset to hand out),
a pending table (offset -> delivery count) of messages handed out and not acked, and a queue of
messages given back by consumers that closed. So it has the full bus contract: fan-out across
groups, competing consumers within one, redelivery with a count, and unacked messages surviving
a consumer's close. Entries every group has acked are trimmed, unless persistence keeps history.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from dotmac.events.bus import BacklogStats, HealthStatus
from dotmac.events.codec import Codec
from dotmac.events.engine import TransportBus
from dotmac.events.errors import ConfigurationError, PublishError
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer
from dotmac.events.transport import Delivery, Receiver

__all__ = ["MemoryBus", "MemoryConfig", "create_memory_bus"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryConfig:
    """Settings of the memory bus.

    ``max_queue_size`` bounds, per topic, the events some group has not yet acked: ``publish``
    waits for room up to ``publish_timeout`` seconds, then raises PublishError. On a topic with
    no group, only the newest ``max_queue_size`` events are kept for a group that joins later.
    ``enable_persistence`` keeps every event (see :meth:`MemoryBus.history`).
    ``new_group_start`` is where a named group that does not exist yet begins.
    """

    max_queue_size: int = 10_000
    enable_persistence: bool = False
    publish_timeout: float = 30.0
    new_group_start: str = "earliest"
    close_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_queue_size, int) or self.max_queue_size < 1:
            raise ConfigurationError(
                "max_queue_size", f"must be an int >= 1, got {self.max_queue_size!r}"
            )
        if not isinstance(self.publish_timeout, int | float) or not self.publish_timeout > 0:
            raise ConfigurationError(
                "publish_timeout", f"must be > 0 seconds, got {self.publish_timeout!r}"
            )
        if self.new_group_start not in ("earliest", "latest"):
            raise ConfigurationError(
                "new_group_start", f"must be 'earliest' or 'latest', got {self.new_group_start!r}"
            )
        if not isinstance(self.close_timeout, int | float) or not self.close_timeout > 0:
            raise ConfigurationError("close_timeout", f"must be > 0, got {self.close_timeout!r}")


@dataclass(slots=True)
class _Entry:
    offset: int
    data: bytes
    key: str | None


@dataclass(slots=True)
class _Group:
    cursor: int
    counts: dict[int, int] = field(default_factory=dict)  # handed out and not acked
    returned: list[int] = field(default_factory=list)  # heap of offsets given back
    private: bool = False
    members: int = 0

    def floor(self) -> int:
        """The lowest offset this group still needs."""
        low = self.cursor
        if self.counts:
            low = min(low, min(self.counts))
        return low


class _Topic:
    def __init__(self) -> None:
        self.base = 0  # offset of log[0]
        self.log: deque[_Entry] = deque()
        self.groups: dict[str, _Group] = {}
        self.receivers: set[_MemoryReceiver] = set()
        self.space = asyncio.Event()

    @property
    def end(self) -> int:
        return self.base + len(self.log)

    def entry(self, offset: int) -> _Entry:
        return self.log[offset - self.base]

    def unconsumed(self) -> int:
        if not self.groups:
            return 0
        return self.end - min(g.floor() for g in self.groups.values())

    def trim(self, keep_all: bool, max_size: int) -> None:
        if keep_all:
            self.space.set()  # an ack frees room even when the history is kept
            return
        floor = min((g.floor() for g in self.groups.values()), default=self.end - max_size)
        while self.log and self.base < floor:
            self.log.popleft()
            self.base += 1
        self.space.set()

    def wake(self) -> None:
        for receiver in self.receivers:
            receiver.wakeup.set()


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
        self._topics: dict[str, _Topic] = {}

    def client(self, *, codec: Codec | None = None, observer: Observer | None = None) -> MemoryBus:
        """Another bus on this bus's in-process broker, as a second process connects to the
        same Redis: it shares topics and groups, and has its own subscriptions and close()."""
        other = MemoryBus(self.config, codec=codec, observer=observer)
        other._topics = self._topics
        return other

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        return topic

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        limit = self.config.max_queue_size
        for event, data in batch:
            topic = self._topic(event.topic)
            if topic.unconsumed() >= limit:
                await self._wait_for_room(event.topic, topic, limit)
            topic.log.append(_Entry(topic.end, data, event.key))
            if not topic.groups:
                topic.trim(self.config.enable_persistence, limit)
            topic.wake()

    async def _wait_for_room(self, name: str, topic: _Topic, limit: int) -> None:
        try:
            async with asyncio.timeout(self.config.publish_timeout):
                while topic.unconsumed() >= limit:
                    topic.space.clear()
                    await topic.space.wait()
        except TimeoutError as exc:
            raise PublishError(
                f"memory topic {name!r} is full: {topic.unconsumed()} events not yet acked by "
                f"every group (max_queue_size={limit}) for {self.config.publish_timeout}s"
            ) from exc

    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int
    ) -> Receiver:
        state = self._topic(topic)
        existing = state.groups.get(group)
        if existing is None:
            start_latest = private or self.config.new_group_start == "latest"
            existing = state.groups[group] = _Group(
                cursor=state.end if start_latest else state.base, private=private
            )
        existing.members += 1
        receiver = _MemoryReceiver(self, state, group, existing)
        state.receivers.add(receiver)
        return receiver

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

    async def stats(self, topic: str, group: str | None = None) -> BacklogStats:
        state = self._topics.get(topic)
        dlq = self._topics.get(f"{topic}.DLQ")
        target = state.groups.get(group) if state is not None and group is not None else None
        return BacklogStats(
            topic=topic,
            group=group,
            length=0 if state is None else len(state.log),
            lag=None
            if state is None or target is None
            else state.end - target.cursor + len(target.returned),
            pending=None if target is None else len(target.counts) - len(target.returned),
            oldest_pending_age=None,
            dlq_depth=0 if dlq is None else len(dlq.log),
        )

    def history(self, topic: str) -> list[Event]:
        """Every event still held for ``topic`` in publish order (all of them with persistence)."""
        state = self._topics.get(topic)
        return [] if state is None else [self.codec.decode(e.data) for e in state.log]

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
        state.wake()


class _MemoryReceiver:
    def __init__(self, bus: MemoryBus, topic: _Topic, group_name: str, group: _Group) -> None:
        self._bus = bus
        self._topic = topic
        self._group_name = group_name
        self._group = group
        self._mine: set[int] = set()
        self.wakeup = asyncio.Event()
        self._interrupted = False

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        if acks:
            await self.ack(acks)
        while not self._interrupted:
            batch = self._take(max_count)
            if batch:
                return batch
            self.wakeup.clear()
            await self.wakeup.wait()
        return []

    def _take(self, max_count: int) -> list[Delivery]:
        topic, group = self._topic, self._group
        taken: list[Delivery] = []
        while len(taken) < max_count:
            if group.returned:
                offset = heapq.heappop(group.returned)
            elif group.cursor < topic.end:
                offset = group.cursor
                group.cursor += 1
            else:
                break
            if offset < topic.base:  # trimmed while it waited (cannot happen without a bug)
                continue
            taken.append(self._deliver(offset))
        return taken

    def _deliver(self, offset: int) -> Delivery:
        count = self._group.counts.get(offset, 0) + 1
        self._group.counts[offset] = count
        self._mine.add(offset)
        entry = self._topic.entry(offset)
        return Delivery(
            data=entry.data, count=count, message_id=str(offset), key=entry.key, offset=offset
        )

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        counts = self._group.counts
        for delivery in deliveries:
            offset = delivery.offset
            if offset in self._mine:
                self._mine.discard(offset)
                counts.pop(offset, None)
        self._topic.trim(self._bus.config.enable_persistence, self._bus.config.max_queue_size)

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        if delivery.offset not in self._group.counts:  # another copy (after a rewind) was acked
            self._mine.discard(delivery.offset)
        if delivery.offset not in self._mine:
            return None
        return self._deliver(delivery.offset)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            offset = delivery.offset
            if offset in self._mine:
                self._mine.discard(offset)
                heapq.heappush(self._group.returned, offset)
        self._topic.wake()

    def interrupt(self) -> None:
        self._interrupted = True
        self.wakeup.set()

    async def close(self) -> None:
        await self.release(
            [Delivery(data=b"", count=0, message_id="", offset=o) for o in self._mine]
        )
        self._topic.receivers.discard(self)
        self._group.members -= 1
        if self._group.private and self._group.members == 0:
            self._topic.groups.pop(self._group_name, None)
            self._topic.trim(self._bus.config.enable_persistence, self._bus.config.max_queue_size)


def create_memory_bus(
    config: MemoryConfig | None = None,
    *,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> MemoryBus:
    """Create an in-process bus; safe to call outside a running event loop."""
    return MemoryBus(config, codec=codec, observer=observer)
