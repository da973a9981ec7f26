"""In-process transport that behaves like a broker: a log per topic and a cursor per group.

Each topic is an append-only log. Each consumer group has a cursor (the next offset to hand out),
a pending table (offset -> delivery count) of messages handed out and not acked, and a queue of
messages given back by consumers that closed. So it has the full bus contract: fan-out across
groups, competing consumers within one, redelivery with a count, and unacked messages surviving
a consumer's close. Entries every group has acked are trimmed, unless persistence keeps history.

Costs, since this is also the bus under every handler test and small app:

* The log is two lists (encoded bytes, key) indexed by offset, so a held event costs its bytes
  object, its key string and two pointer slots (~18 B): no object or dict per entry. Trimming
  blanks slots and cuts the blank head off once it is half the list, so reads stay O(1).
* Every group keeps its floor (the lowest offset it still needs) as acks arrive, from a heap of
  the offsets it handed out; the topic keeps the lowest floor of its groups. Publish checks room
  with one subtraction, and an ack trims only what it freed, instead of scanning the pending
  tables of every group on every publish and ack.
* A publish with room appends and returns without awaiting anything. Publishers that find the
  topic full queue in order and are woken one per freed slot (the slot is kept for them), never
  all at once to race for it; one timer per topic enforces their ``publish_timeout``.
* A publish wakes one sleeping receiver per group, and only when one sleeps; a receiver that
  leaves work behind wakes the next.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush

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


class _Group:
    __slots__ = ("counts", "cursor", "handed", "low", "members", "private", "returned", "sleepers")

    def __init__(self, cursor: int, *, private: bool) -> None:
        self.cursor = cursor  # next offset never handed out
        self.counts: dict[int, int] = {}  # handed out and not acked -> delivery count
        # Min-heap over the offsets in ``counts``; acked ones are dropped when they reach the top.
        # Offsets are pushed in increasing order, so a push costs one comparison.
        self.handed: list[int] = []
        self.returned: list[int] = []  # heap of offsets given back (still in ``counts``)
        self.low = cursor  # the lowest offset this group still needs: min(cursor, counts)
        self.private = private
        self.members = 0
        self.sleepers: deque[_MemoryReceiver] = deque()  # receivers blocked in fetch, in order

    def floor(self) -> int:
        handed, counts = self.handed, self.counts
        while handed and handed[0] not in counts:
            heappop(handed)
        return handed[0] if handed and handed[0] < self.cursor else self.cursor

    def has_work(self, end: int) -> bool:
        return bool(self.returned) or self.cursor < end


class _Topic:
    __slots__ = (
        "base",
        "clock",
        "data",
        "end",
        "expiry",
        "floor",
        "granted",
        "groups",
        "hungry",
        "keep_all",
        "keys",
        "limit",
        "origin",
        "publishers",
    )

    def __init__(self, limit: int, *, keep_all: bool) -> None:
        self.limit = limit
        self.keep_all = keep_all
        # The log: offset ``o`` is at index ``o - origin`` of both lists. Trimmed slots before
        # ``base`` are blanked (their bytes freed) and cut off once they are half the list.
        self.data: list[bytes] = []
        self.keys: list[str | None] = []
        self.origin = 0  # offset of data[0]
        self.base = 0  # oldest offset held
        self.end = 0  # offset the next event gets
        self.groups: dict[str, _Group] = {}
        self.floor = 0  # min(group.low); meaningless while there is no group
        self.hungry: dict[_Group, None] = {}  # groups with a receiver blocked in fetch
        # Publishers waiting for room, in order, with their deadlines: one timer for all of them
        # (``expiry``, armed for the first deadline), not one per wait.
        self.publishers: deque[tuple[asyncio.Future[bool], float]] = deque()
        self.granted = 0  # slots promised to woken publishers that have not appended yet
        self.expiry: asyncio.TimerHandle | None = None
        self.clock: asyncio.AbstractEventLoop | None = None  # the loop ``expiry`` runs on

    def unconsumed(self) -> int:
        return self.end - self.floor if self.groups else 0

    def has_room(self) -> bool:
        return not self.groups or self.end + self.granted - self.floor < self.limit

    def held(self) -> list[bytes]:
        return self.data[self.base - self.origin :]

    def append(self, data: bytes, key: str | None) -> None:
        self.data.append(data)
        self.keys.append(key)
        self.end += 1
        if self.hungry:
            for group in list(self.hungry):
                self.wake_one(group)
        if not self.groups and not self.keep_all and self.end - self.base > self.limit:
            self._trim_to(self.end - self.limit)

    def refloor(self) -> None:
        """Recompute the floor after a group moved or left; trim and let publishers in when it
        rose."""
        if not self.groups:
            if not self.keep_all:
                self._trim_to(self.end - self.limit)
            self.grant()
            return
        groups = self.groups
        old = self.floor
        if len(groups) == 1:
            self.floor = next(iter(groups.values())).low
        else:
            self.floor = min(g.low for g in groups.values())
        if self.floor > old:
            if not self.keep_all:
                self._trim_to(self.floor)
            self.grant()

    def group_moved(self, group: _Group) -> None:
        """``group`` acked: recompute its floor, and the topic's when it was the lowest."""
        old, group.low = group.low, group.floor()
        if group.low != old and old == self.floor:
            self.refloor()

    def _trim_to(self, offset: int) -> None:
        if offset <= self.base:
            return
        data, keys = self.data, self.keys
        start, stop = self.base - self.origin, offset - self.origin
        if stop * 2 >= len(data):  # the blanked head would be half the list: cut it off
            del data[:stop]
            del keys[:stop]
            self.origin = offset
        else:
            data[start:stop] = [b""] * (stop - start)
            keys[start:stop] = [None] * (stop - start)
        self.base = offset

    def grant(self) -> None:
        """Wake waiting publishers, first come first served, one per free slot."""
        publishers = self.publishers
        while publishers and self.has_room():
            waiter = publishers.popleft()[0]
            if not waiter.done():
                waiter.set_result(True)
                self.granted += 1

    def wait_for_room(self, timeout: float) -> asyncio.Future[bool]:
        """Queue a publisher: the future is True once a slot is its, False past ``timeout``."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        deadline = loop.time() + timeout
        self.publishers.append((waiter, deadline))
        if self.expiry is None or self.clock is not loop:
            self.clock = loop
            self.expiry = loop.call_at(deadline, self._expire)
        return waiter

    def _expire(self) -> None:
        """Fail the publishers whose deadline passed; re-arm for the next deadline."""
        self.expiry = None
        loop = self.clock
        if loop is None:
            return
        publishers, soon = self.publishers, loop.time() + 0.001
        while publishers:
            waiter, deadline = publishers[0]
            if not waiter.done():
                if deadline > soon:
                    self.expiry = loop.call_at(deadline, self._expire)
                    return
                waiter.set_result(False)
            publishers.popleft()

    def forget(self, waiter: asyncio.Future[bool]) -> None:
        """A publisher stopped waiting (cancelled). A slot it was promised goes to the next."""
        if waiter.done() and not waiter.cancelled() and waiter.result():
            self.granted -= 1
            self.grant()
            return
        for index, (queued, _) in enumerate(self.publishers):
            if queued is waiter:
                del self.publishers[index]
                return

    def wake_one(self, group: _Group) -> None:
        sleepers = group.sleepers
        while sleepers:
            if sleepers.popleft().wake():
                break
        if not sleepers:
            self.hungry.pop(group, None)

    def pass_on(self, group: _Group) -> None:
        """Wake the next sleeper of ``group`` when there is work no one awake will take."""
        if group.sleepers and group.has_work(self.end):
            self.wake_one(group)


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
            topic = self._topics[name] = _Topic(
                self.config.max_queue_size, keep_all=self.config.enable_persistence
            )
        return topic

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        topics = self._topics
        for event, data in batch:
            topic = topics.get(event.topic) or self._topic(event.topic)
            # Publishers already queued hold no room: any room there is has been promised to them.
            if topic.groups and (topic.publishers or not topic.has_room()):
                await self._wait_for_room(event.topic, topic)
            topic.append(data, event.key)

    async def _wait_for_room(self, name: str, topic: _Topic) -> None:
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
        self, topic: str, group: str, *, private: bool, prefetch: int
    ) -> Receiver:
        state = self._topic(topic)
        existing = state.groups.get(group)
        if existing is None:
            start_latest = private or self.config.new_group_start == "latest"
            existing = state.groups[group] = _Group(
                state.end if start_latest else state.base, private=private
            )
            # Joining only lowers the floor (the first group sets it): nothing to trim or grant.
            state.floor = existing.low if len(state.groups) == 1 else min(state.floor, existing.low)
        existing.members += 1
        return _MemoryReceiver(state, group, existing)

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
            length=0 if state is None else state.end - state.base,
            lag=None
            if state is None or target is None
            else state.end - target.cursor + len(target.returned),
            pending=None if target is None else len(target.counts) - len(target.returned),
            oldest_pending_age=None,
            dlq_depth=0 if dlq is None else dlq.end - dlq.base,
        )

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


class _MemoryReceiver:
    __slots__ = ("_group", "_group_name", "_interrupted", "_mine", "_topic", "_waiter")

    def __init__(self, topic: _Topic, group_name: str, group: _Group) -> None:
        self._topic = topic
        self._group_name = group_name
        self._group = group
        self._mine: set[int] = set()  # offsets handed to this receiver and not acked
        self._waiter: asyncio.Future[None] | None = None
        self._interrupted = False

    def wake(self) -> bool:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return False
        waiter.set_result(None)
        return True

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        if acks:
            self._ack(acks)
        while not self._interrupted:
            batch = self._take(max_count)
            if batch:
                return batch
            await self._sleep()
        self._topic.pass_on(self._group)  # a wake meant for us may have come with the interrupt
        return []

    async def _sleep(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._group.sleepers.append(self)
        self._topic.hungry[self._group] = None
        try:
            await waiter
        except asyncio.CancelledError:
            self._leave_sleepers()
            if waiter.done() and not waiter.cancelled():  # woken, then cancelled: pass it on
                self._topic.pass_on(self._group)
            raise
        finally:
            self._waiter = None

    def _leave_sleepers(self) -> None:
        sleepers = self._group.sleepers
        if self in sleepers:
            sleepers.remove(self)
            if not sleepers:
                self._topic.hungry.pop(self._group, None)

    def _take(self, max_count: int) -> list[Delivery]:
        topic, group = self._topic, self._group
        counts, mine, origin = group.counts, self._mine, topic.origin
        taken: list[Delivery] = []
        returned = group.returned
        while returned and len(taken) < max_count:
            offset = heappop(returned)
            if offset not in counts:  # acked through another copy (after a rewind) meanwhile
                continue
            count = counts[offset] + 1
            counts[offset] = count
            mine.add(offset)
            index = offset - origin
            taken.append(
                Delivery(topic.data[index], count, str(offset), topic.keys[index], None, offset)
            )
        start = group.cursor
        stop = min(topic.end, start + max_count - len(taken))
        if stop > start:
            group.cursor = stop
            handed = group.handed
            entries = zip(
                topic.data[start - origin : stop - origin],
                topic.keys[start - origin : stop - origin],
                strict=True,
            )
            for offset, (data, key) in enumerate(entries, start):
                count = counts.get(offset, 0) + 1  # more than 1 only after a rewind
                counts[offset] = count
                if count == 1:
                    heappush(handed, offset)
                mine.add(offset)
                taken.append(Delivery(data, count, str(offset), key, None, offset))
        if taken:
            topic.pass_on(group)
        return taken

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._ack(deliveries)

    def _ack(self, deliveries: Sequence[Delivery]) -> None:
        counts, mine = self._group.counts, self._mine
        for delivery in deliveries:
            offset = delivery.offset
            if offset in mine:
                mine.discard(offset)
                counts.pop(offset, None)
        self._topic.group_moved(self._group)

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        offset = delivery.offset
        counts = self._group.counts
        if offset not in counts:  # another copy (after a rewind) was acked
            self._mine.discard(offset)
        if offset not in self._mine:
            return None
        count = counts[offset] + 1
        counts[offset] = count
        index = offset - self._topic.origin
        return Delivery(
            self._topic.data[index], count, str(offset), self._topic.keys[index], None, offset
        )

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        self._release(delivery.offset for delivery in deliveries)

    def _release(self, offsets: Iterable[int | None]) -> None:
        mine, returned = self._mine, self._group.returned
        for offset in offsets:
            if offset in mine:
                mine.discard(offset)
                heappush(returned, offset)
        self._topic.pass_on(self._group)

    def interrupt(self) -> None:
        self._interrupted = True
        self._leave_sleepers()
        self.wake()

    async def close(self) -> None:
        self._release(list(self._mine))
        self._leave_sleepers()
        topic, group = self._topic, self._group
        group.members -= 1
        if group.private and group.members == 0 and topic.groups.get(self._group_name) is group:
            del topic.groups[self._group_name]
            topic.hungry.pop(group, None)
            topic.refloor()


def create_memory_bus(
    config: MemoryConfig | None = None,
    *,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> MemoryBus:
    """Create an in-process bus; safe to call outside a running event loop."""
    return MemoryBus(config, codec=codec, observer=observer)
