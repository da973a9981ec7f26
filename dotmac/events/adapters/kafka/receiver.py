"""The Kafka Receiver: an AIOKafkaConsumer whose commits follow finished handlers.

Auto-commit is off. Each assigned partition has a :class:`PartitionLedger`; an ack marks an
offset done and the receiver commits, per partition, up to the first offset not yet done, so
a message still running or failing is never skipped by a later commit. Kafka keeps no delivery
count, so the count lives in the ledger (in memory) for as long as this consumer owns the
partition, and, for a named group, in the attempts log (``attempts.py``) where it must outlive
this consumer: the first record fetched from a partition after each assignment, records the
log already counts, and every redelivery are written there before they are handed out, so a
record that crashes its consumer reaches the next owner with its real count.

Kafka commits a position, not records, so records handled before a crashing one but not yet
committed are delivered again by the next owner, and the first of them, at the committed
position, would gain a count per crash while the crashing record, not first, gained none:
the handled record would be dead-lettered unhandled, and the crashing one never. So when the
first record of an assignment is one the log already counts (its previous owner handed it
out and did not commit past it), the partition is replayed carefully: one record at a time,
each counted in the log before it is handed out and committed before the next, for as many
records as the subscription holds at once (the most a fetch asked for: its prefetch, what the
previous owner usually held uncommitted). Handled records then leave the log as they are
committed and the crashing one gains a count per crash. A crashing record further on (behind
one slow record, up to ``max_uncommitted`` finished ones can wait uncommitted) reaches a
careful window a few crashes later, and a handled record is counted at most twice meanwhile.
Other partitions are not held.

In a rebalance, revoked partitions stop being handed out, their in-flight handlers get
``revoke_timeout_ms`` to finish, what finished is committed, and their ledgers are dropped:
acks arriving later are ignored and those messages go to the next owner.

A private receiver (``subscribe(group=None)``) assigns itself every partition from the end of
the topic without joining a group, and commits nothing: its progress dies with it anyway.

Partitions are paused except while ``fetch`` waits for records with none left here, and a
poll takes everything aiokafka has fetched, so each fetch asks for all partitions together
and its records leave aiokafka's buffer as they arrive. Why: aiokafka sends one fetch per
broker at a time and leaves out partitions whose records it still buffers; once those are
100 ms old it fetches the other partitions alone. If those are caught up, the broker holds
that fetch until records arrive or ``fetch_max_wait_ms`` passes (Tansu looks again only after
half the remaining wait), and the partitions with a backlog cannot be fetched until it
returns: a consumer slower than one fetch's records per 100 ms lost up to
``fetch_max_wait_ms`` per fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka

from dotmac.events.adapters.kafka.attempts import AttemptLog
from dotmac.events.adapters.kafka.bootstrap import start_client
from dotmac.events.adapters.kafka.errors import kafka_errors, unless_cancelled
from dotmac.events.adapters.kafka.ledger import PartitionLedger, Slot
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.transport import Delivery

__all__ = ["KafkaReceiver"]

logger = logging.getLogger("dotmac.events.kafka")

_FETCH_WAIT_MS = 1000  # how long one fetch() may block waiting for records
_ALL = 1 << 30  # getmany's max_records: everything aiokafka holds (bounded by the fetch sizes)


class KafkaReceiver:
    """Receiver for one topic and group (see :class:`~dotmac.events.transport.Receiver`)."""

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        group: str,
        *,
        private: bool,
        from_beginning: bool = False,
        on_close: Callable[[KafkaReceiver], None] | None = None,
        attempts: AttemptLog | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self.private = private
        self.from_beginning = from_beginning
        self._config = config
        self._on_close = on_close
        self._group_id = config.group_id(group, topic)
        self._attempts = None if private else attempts  # a private consumer's counts die with it
        self._unwritten: set[PartitionLedger] = set()  # ledgers whose counts must be stored
        self._writing = asyncio.Lock()  # one attempts write at a time keeps the latest last
        options = config.consumer_kwargs(group=None if private else self._group_id, private=private)
        if from_beginning:  # a topic a pattern found after it started: all of it is new
            options["auto_offset_reset"] = "earliest"
        self._consumer = AIOKafkaConsumer(**options)
        self._ledgers: dict[int, PartitionLedger] = {}
        self._fetched: dict[int, tuple[PartitionLedger, deque[Any]]] = {}  # not yet handed out
        self._polling = False  # fetch() waits for records: partitions may be fetched
        self._most = 1  # the most records a fetch asked for: the subscription's prefetch
        self._settled = asyncio.Event()  # a careful partition committed: it may hand out more
        self._assigned = asyncio.Event()
        self._changed = asyncio.Event()  # an in-flight offset was acked or given up
        self._interrupted = asyncio.Event()
        self._closing = False
        self._revoking = False
        self._getmany: asyncio.Task[dict[TopicPartition, list[Any]]] | None = None

    # --- joining ---------------------------------------------------------------------------------

    async def start(self, partitions: Sequence[int]) -> None:
        """Join the group (or assign every partition, if private) and resolve start positions."""
        consumer = self._consumer
        with kafka_errors(f"consumer start on {self.topic!r}"):
            await start_client(consumer, self._config)
            try:
                if self.private:
                    tps = [TopicPartition(self.topic, p) for p in partitions]
                    consumer.assign(tps)
                    self._on_assigned(tps)  # paused before aiokafka fetches from the default
                    if self.from_beginning:
                        await consumer.seek_to_beginning(*tps)
                    else:
                        await consumer.seek_to_end(*tps)
                else:
                    consumer.subscribe([self.topic], listener=_Listener(self))
                    join_timeout = (
                        self._config.request_timeout_ms + 3 * self._config.session_timeout_ms
                    ) / 1000
                    async with asyncio.timeout(join_timeout):
                        await self._assigned.wait()
                for tp in consumer.assignment():  # so events published from now on are seen
                    await consumer.position(tp)
            except BaseException:
                await consumer.stop()
                raise

    def _on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        for tp in assigned:
            if tp.topic == self.topic:
                self._ledgers[tp.partition] = PartitionLedger(tp.partition)
        self._revoking = False
        self._flow()
        self._assigned.set()

    async def _on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        ledgers = [
            ledger for tp in revoked if (ledger := self._ledgers.get(tp.partition)) is not None
        ]
        if not ledgers:
            return
        self._revoking = True
        for ledger in ledgers:
            ledger.revoking = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.revoke_timeout_ms / 1000
        while any(ledger.in_flight() for ledger in ledgers) and loop.time() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(deadline - loop.time(), 0)):
                    await self._changed.wait()
        late = sum(ledger.in_flight() for ledger in ledgers)
        if late:
            logger.warning(
                "kafka topic %s, group %s: %d handlers still running after revoke_timeout_ms; "
                "their messages go to the next owner",
                self.topic,
                self.group,
                late,
            )
        try:
            await self._commit(ledgers)
        except Exception as exc:
            logger.warning(
                "kafka topic %s, group %s: commit on revoke failed: %r", self.topic, self.group, exc
            )
        for ledger in ledgers:
            self._ledgers.pop(ledger.partition, None)
            self._fetched.pop(ledger.partition, None)

    # --- the Receiver protocol -----------------------------------------------------------------

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        await self.ack(acks)
        self._most = max(self._most, max_count)
        taken = self._take_released(max_count)
        if self._unwritten:
            await self._write_counts()
        if taken or self._interrupted.is_set():
            return taken
        # With records here to hand out, a poll that returns at once (aiokafka counts the time
        # between polls against max_poll_interval_ms); otherwise wait for a fetch.
        records = await self._poll(0 if self._ready() else _FETCH_WAIT_MS)
        if self._interrupted.is_set():
            return []  # closing: what was fetched and not handed out goes back with the group
        if self._attempts is not None and records:
            await self._read_counts(records)
        deliveries = self._hand_out(min(max_count, self._config.max_poll_records))
        if self._unwritten:
            await self._write_counts()
        return deliveries

    async def _poll(self, wait_ms: int) -> dict[TopicPartition, list[Any]]:
        """Take what aiokafka has fetched, waiting up to ``wait_ms``; {} when interrupted, or
        when a careful partition's commit lets it hand out a record it holds."""
        self._getmany = asyncio.ensure_future(self._take_fetched(wait_ms))
        self._settled.clear()
        wakes = [asyncio.ensure_future(self._interrupted.wait())]
        if wait_ms:
            wakes.append(asyncio.ensure_future(self._settled.wait()))
        try:
            await asyncio.wait([self._getmany, *wakes], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wake in wakes:
                wake.cancel()
        task, self._getmany = self._getmany, None
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return {}
        with kafka_errors(f"fetch from {self.topic!r}"):
            return task.result()

    async def _take_fetched(self, wait_ms: int) -> dict[TopicPartition, list[Any]]:
        """Move every record aiokafka holds here; only a waiting poll lets it fetch."""
        self._polling = wait_ms > 0
        if self._polling:
            self._flow()
        try:
            records: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                timeout_ms=wait_ms, max_records=_ALL
            )
        finally:
            if self._polling:  # paused as the getmany returns, before aiokafka's fetcher runs
                self._polling = False
                self._flow()
        for tp, batch in records.items():
            ledger = self._ledgers.get(tp.partition)
            if ledger is None or ledger.revoking:
                continue  # not ours any more: the next owner reads them from the commit
            kept = self._fetched.get(tp.partition)
            if kept is None or kept[0] is not ledger:
                self._fetched[tp.partition] = (ledger, deque(batch))
            else:
                kept[1].extend(batch)
        return records

    def _flow(self) -> None:
        """Let aiokafka fetch, while fetch() waits, the partitions no stuck offset holds and
        with no fetched records left to hand out (a careful one's); pause them all otherwise
        (see the module docstring)."""
        fetched = self._fetched
        for partition, ledger in self._ledgers.items():
            if ledger.revoking:
                continue
            tp = TopicPartition(self.topic, partition)
            if self._polling and not ledger.paused and partition not in fetched:
                self._consumer.resume(tp)
            else:
                self._consumer.pause(tp)

    def _ready(self) -> bool:
        """Whether records fetched earlier can be handed out now."""
        return any(not _held_back(ledger) for ledger, _ in self._fetched.values())

    def _hand_out(self, max_count: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        now = time.monotonic()
        for partition, (ledger, records) in list(self._fetched.items()):
            if self._ledgers.get(partition) is not ledger or ledger.revoking:
                del self._fetched[partition]  # the next owner reads them from the commit
                continue
            if _held_back(ledger):
                continue  # its last record is not committed yet
            durable = ledger.durable
            first = durable is not None and ledger.untouched()
            while records and len(deliveries) < max_count:
                record = records.popleft()
                key = None if record.key is None else bytes(record.key).decode(errors="replace")
                slot = ledger.add(record.offset, bytes(record.value or b""), key, now)
                if slot is None:
                    continue
                if record.headers:
                    slot.headers = record.headers
                if durable is not None and (
                    first or ledger.careful() or (durable and slot.offset in durable)
                ):
                    if first and slot.offset in durable:  # handed out before, not committed
                        ledger.careful_until = slot.offset + self._most
                    self._count(ledger, durable, slot, first)
                    first = False
                deliveries.append(self._delivery(ledger, slot))
                if ledger.careful():
                    break  # the next one once this one is committed
            if len(ledger) >= self._config.max_uncommitted and not ledger.paused:
                ledger.paused = True  # a stuck offset holds too many finished ones behind it
                if records:  # fetched again when it is resumed
                    self._consumer.seek(TopicPartition(self.topic, partition), records[0].offset)
                    records.clear()
            if not records:
                del self._fetched[partition]
            if len(deliveries) >= max_count:
                break
        return deliveries

    def _count(
        self, ledger: PartitionLedger, durable: dict[int, int], slot: Slot, first: bool
    ) -> None:
        """Continue a stored count (or start one for the assignment's first record) and mark
        the ledger to be written before the slot is handed out."""
        if first:  # the committed position: counts below it are of handled records
            for offset in [o for o in durable if o < slot.offset]:
                del durable[offset]
        slot.count = durable.get(slot.offset, 0) + 1
        durable[slot.offset] = slot.count
        self._unwritten.add(ledger)

    async def _read_counts(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Load the stored counts of partitions fetched from for the first time since their
        assignment. A failed read is logged and counts start at 1 (as without the log): the
        fetched records must be handed out, the consumer's position is past them."""
        assert self._attempts is not None
        if not any(
            (ledger := self._ledgers.get(tp.partition)) is not None and ledger.durable is None
            for tp in records
        ):
            return
        # One catch-up serves every partition of this assignment not yet read: catching up
        # again per partition would wait for this bus's own writes to come back (on a broker
        # that does not wake a waiting fetch, a fetch wait each: 0.2 s per partition).
        fresh = [ledger for ledger in self._ledgers.values() if ledger.durable is None]
        try:
            await self._attempts.catch_up()
        except Exception as exc:
            logger.warning(
                "kafka topic %s, group %s: reading delivery counts failed: %r",
                self.topic,
                self.group,
                exc,
            )
            for ledger in fresh:
                ledger.durable = {}
            return
        for ledger in fresh:
            ledger.durable = self._attempts.stored(self._group_id, self.topic, ledger.partition)

    async def _write_counts(self) -> None:
        """Store the counts of the ledgers marked since the last write (still ours), dropping
        offsets below the committed position. A failed write is logged; the counts stay in
        memory and go out with the next write."""
        if self._attempts is None:
            self._unwritten.clear()
            return
        async with self._writing:
            ledgers, self._unwritten = self._unwritten, set()
            counts = [
                (
                    ledger.partition,
                    {
                        offset: n
                        for offset, n in ledger.durable.items()
                        if ledger.committed is None or offset >= ledger.committed
                    },
                )
                for ledger in ledgers
                if ledger.durable is not None and self._ledgers.get(ledger.partition) is ledger
            ]
            try:
                await self._attempts.write(self._group_id, self.topic, counts)
            except Exception as exc:
                logger.warning(
                    "kafka topic %s, group %s: storing delivery counts failed: %r",
                    self.topic,
                    self.group,
                    exc,
                )

    def _delivery(self, ledger: PartitionLedger, slot: Slot) -> Delivery:
        return Delivery(
            data=slot.data or b"",
            count=slot.count,
            message_id=f"{self.topic}:{ledger.partition}:{slot.offset}",
            key=slot.key,
            partition=ledger.partition,
            offset=slot.offset,
            token=ledger,
            headers=slot.headers,
        )

    def _current(self, delivery: Delivery) -> PartitionLedger | None:
        """The delivery's ledger if it is still this receiver's live one for that partition."""
        ledger = delivery.token
        if not isinstance(ledger, PartitionLedger) or delivery.partition is None:
            return None
        return ledger if self._ledgers.get(delivery.partition) is ledger else None

    def _take_released(self, max_count: int) -> list[Delivery]:
        if self._closing:
            return []
        taken: list[Delivery] = []
        for ledger in self._ledgers.values():
            if ledger.revoking:
                continue
            for slot in ledger.released()[: max_count - len(taken)]:
                ledger.again(slot.offset)
                self._recount(ledger, slot)
                taken.append(self._delivery(ledger, slot))
        return taken

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        touched: set[PartitionLedger] = set()
        for delivery in deliveries:
            ledger = self._current(delivery)
            if ledger is not None and ledger.done(delivery.offset):
                touched.add(ledger)
        if touched:
            self._changed.set()
        if self._revoking:
            return  # the revoke callback commits what is done, once
        await self._commit(list(self._ledgers.values()))

    async def _commit(self, ledgers: Sequence[PartitionLedger]) -> None:
        """Commit each ledger's contiguous done position where it moved, then resume paused ones."""
        offsets = {}
        for ledger in ledgers:
            position = ledger.to_commit()
            if position is not None:
                offsets[ledger] = position
        if offsets and not self.private:
            commit = {
                TopicPartition(self.topic, ledger.partition): pos for ledger, pos in offsets.items()
            }
            try:
                with kafka_errors(f"commit on {self.topic!r}"):
                    await self._consumer.commit(commit)
            except Exception as exc:
                cause = exc.__cause__
                if isinstance(cause, kafka.CommitFailedError | kafka.IllegalStateError):
                    # the group is rebalancing: the revoke callback commits what is done
                    logger.debug("kafka commit deferred by a rebalance: %r", cause)
                    return
                raise
        for ledger, position in offsets.items():
            if ledger.careful() and ledger.partition in self._fetched:
                self._settled.set()  # its next record is here: a waiting poll hands it out
            if ledger.committed is None or position > ledger.committed:
                ledger.committed = position  # a retried lower commit never moves it back
        resumed = False
        for ledger in ledgers:
            if ledger.paused and len(ledger) < self._config.max_uncommitted:
                ledger.paused = False
                resumed = True
        if resumed:
            self._flow()

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        ledger = self._current(delivery)
        if ledger is None or ledger.revoking or self._closing:
            if ledger is not None:  # stop the revoke waiting for it: it will not run here
                ledger.release(delivery.offset)
                self._changed.set()
            return None
        slot = ledger.again(delivery.offset)
        if slot is None:
            return None
        self._recount(ledger, slot)
        if self._unwritten:
            await self._write_counts()  # before the handler runs: it may crash this process
        return self._delivery(ledger, slot)

    def _recount(self, ledger: PartitionLedger, slot: Slot) -> None:
        """A slot handed out again: its new count goes to the attempts log."""
        if ledger.durable is not None:
            ledger.durable[slot.offset] = slot.count
            self._unwritten.add(ledger)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            ledger = self._current(delivery)
            if ledger is not None:
                ledger.release(delivery.offset)
        self._changed.set()

    def interrupt(self) -> None:
        self._interrupted.set()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._interrupted.set()
        self._changed.set()
        try:
            if not self._revoking:
                await unless_cancelled(self._commit(list(self._ledgers.values())))
        except Exception as exc:
            logger.warning(
                "kafka topic %s, group %s: final commit failed: %r", self.topic, self.group, exc
            )
        finally:
            self._ledgers.clear()
            self._fetched.clear()
            if self._on_close is not None:
                self._on_close(self)
            with kafka_errors(f"consumer stop on {self.topic!r}"):
                await unless_cancelled(self._consumer.stop())

    # --- introspection for stats() -------------------------------------------------------------

    def pending(self) -> int:
        """Messages handed out here and not yet acked."""
        return sum(ledger.in_flight() for ledger in self._ledgers.values())

    def oldest_pending_since(self) -> float | None:
        """When the longest-held message handed out here and not yet acked was first fetched
        (monotonic time), or None. Kafka records no delivery times: only this process knows."""
        times = [ledger.oldest_in_flight() for ledger in self._ledgers.values()]
        return min((t for t in times if t is not None), default=None)


def _held_back(ledger: PartitionLedger) -> bool:
    """A careful partition hands out its next record only once the last one is committed."""
    return ledger.careful() and not ledger.settled()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, receiver: KafkaReceiver) -> None:
        self._receiver = receiver

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._receiver._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._receiver._on_assigned(assigned)
