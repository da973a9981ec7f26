"""The memory bus's Receiver: hands a group's log entries to one consumer and takes back acks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from heapq import heappop, heappush
from time import monotonic

from dotmac.events.adapters.memory.log import Group, Topic
from dotmac.events.transport import Delivery

__all__ = ["MemoryReceiver"]


class MemoryReceiver:
    __slots__ = ("_group", "_group_name", "_interrupted", "_mine", "_topic", "_waiter")

    def __init__(self, topic: Topic, group_name: str, group: Group) -> None:
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
            again = Delivery(topic.data[index], count, str(offset), topic.keys[index], None, offset)
            again.headers = topic.headers.get(offset, ())
            taken.append(again)
        start = group.cursor
        stop = min(topic.end, start + max_count - len(taken))
        if stop > start:
            group.cursor = stop
            group.handing_out(start, monotonic())
            handed = group.handed
            entries = zip(
                topic.data[start - origin : stop - origin],
                topic.keys[start - origin : stop - origin],
                strict=True,
            )
            headers, purged = topic.headers, topic.purged
            for offset, (data, key) in enumerate(entries, start):
                if purged and offset in purged:  # deleted (a purged dead letter): skipped
                    continue
                count = counts.get(offset, 0) + 1  # more than 1 only after a rewind
                counts[offset] = count
                if count == 1:
                    heappush(handed, offset)
                mine.add(offset)
                delivery = Delivery(data, count, str(offset), key, None, offset)
                if headers and offset in headers:
                    delivery.headers = headers[offset]
                taken.append(delivery)
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
        again = Delivery(
            self._topic.data[index], count, str(offset), self._topic.keys[index], None, offset
        )
        again.headers = self._topic.headers.get(offset, ())
        return again

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
