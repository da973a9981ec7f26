"""Per-partition bookkeeping of handed-out offsets: what may be committed, and what is in flight.

Kafka keeps one committed position per partition, so a consumer that runs handlers out of
order (concurrency, retries) may only commit up to the first offset that is not yet done:
if offset 5 is running or failed and 6 finished, the committed position stays at 5. A ledger
lives for one assignment of one partition; a rebalance replaces it, so acks that arrive for
an older assignment are recognised and ignored.

``durable`` holds the delivery counts this partition keeps in the attempts log (see
``attempts.py``): None until read at the first fetch of the assignment (and always when the
log is off); an offset leaves it when it is done.

``careful_until`` ends a careful replay: offsets below it are handed out one at a time, each
committed before the next. A partition whose previous owner died before committing records
it had handled (see the receiver) is replayed that way, so a crash charges the record that
caused it, not the handled ones before it.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PartitionLedger", "Slot", "SlotState"]


class SlotState(enum.Enum):
    HANDED = "handed"  # given to the subscription; running, queued, or waiting to be retried
    RELEASED = "released"  # given back unhandled; to be handed out again or left to the group
    DONE = "done"  # handled (or dead-lettered): may be committed


@dataclass(slots=True)
class Slot:
    offset: int
    count: int
    data: bytes | None
    key: str | None
    state: SlotState = SlotState.HANDED
    headers: Sequence[tuple[str, bytes]] = ()  # the record's headers (kept for a dead letter)
    fetched_at: float = 0.0  # monotonic time of the first fetch; redeliveries keep it


class PartitionLedger:
    """Offsets of one partition handed out and not yet committed, in fetch order."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.revoking = False
        self.paused = False
        self.committed: int | None = None  # the position last committed (next offset to read)
        self.durable: dict[int, int] | None = None  # offset -> deliveries kept in the attempts log
        self.careful_until: int | None = None  # offsets below it: one at a time (see above)
        self._slots: dict[int, Slot] = {}
        self._order: deque[int] = deque()
        self._next: int | None = None  # one past the highest offset seen

    def __len__(self) -> int:
        """Offsets held: handed out, given back, or done but not yet committable."""
        return len(self._order)

    def add(
        self, offset: int, data: bytes, key: str | None, fetched_at: float = 0.0
    ) -> Slot | None:
        """Record a fetched offset; None if it was seen already (a fetch repeated after a seek)."""
        if self._next is not None and offset < self._next:
            return None
        slot = Slot(offset=offset, count=1, data=data, key=key, fetched_at=fetched_at)
        self._slots[offset] = slot
        self._order.append(offset)
        self._next = offset + 1
        return slot

    def untouched(self) -> bool:
        """True until the first offset of this assignment is added."""
        return self._next is None

    def settled(self) -> bool:
        """True when every offset handed out in this assignment is committed (or none was)."""
        return self._next is None or self.committed == self._next

    def careful(self) -> bool:
        """True while a careful replay has not committed up to ``careful_until``."""
        end = self.careful_until
        return end is not None and (self.committed is None or self.committed < end)

    def get(self, offset: int | None) -> Slot | None:
        return None if offset is None else self._slots.get(offset)

    def done(self, offset: int | None) -> bool:
        """Mark a handed-out offset handled. False if it is not held (acked twice, or old)."""
        slot = self.get(offset)
        if slot is None or slot.state is SlotState.DONE:
            return False
        slot.state = SlotState.DONE
        slot.data = None  # only the offset is needed from now on
        if self.durable:
            self.durable.pop(slot.offset, None)  # dropped from the log with the next write
        return True

    def again(self, offset: int | None) -> Slot | None:
        """Hand a handed-out or given-back offset out again with its count increased."""
        slot = self.get(offset)
        if slot is None or slot.state is SlotState.DONE:
            return None
        slot.state = SlotState.HANDED
        slot.count += 1
        return slot

    def release(self, offset: int | None) -> Slot | None:
        slot = self.get(offset)
        if slot is None or slot.state is not SlotState.HANDED:
            return None
        slot.state = SlotState.RELEASED
        return slot

    def in_flight(self) -> int:
        """Offsets the subscription still holds (running, queued or waiting for a retry)."""
        return sum(1 for s in self._slots.values() if s.state is SlotState.HANDED)

    def oldest_in_flight(self) -> float | None:
        """When the first-fetched offset still in flight was fetched, or None. Slots are held in
        fetch order, so that is the first handed-out one."""
        slots = self._slots
        for offset in self._order:
            slot = slots[offset]
            if slot.state is SlotState.HANDED:
                return slot.fetched_at
        return None

    def released(self) -> list[Slot]:
        return [s for s in self._slots.values() if s.state is SlotState.RELEASED]

    def position(self) -> int | None:
        """The offset to commit: the first one not yet done (everything below it is done)."""
        order, slots = self._order, self._slots
        while order and slots[order[0]].state is SlotState.DONE:
            del slots[order.popleft()]
        if order:
            return order[0]
        return self._next

    def to_commit(self) -> int | None:
        """The position to commit now, or None if it is not past the last committed one."""
        position = self.position()
        if position is None or (self.committed is not None and position <= self.committed):
            return None
        return position
