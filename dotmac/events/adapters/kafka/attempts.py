"""Delivery counts that outlive a consumer: the Kafka bus's attempts log.

Kafka keeps no delivery count, so a consumer counts in memory (its ledgers); without more, a
record that crashes its consumer starts again at 1 with the next owner of its partition, and
a retry budget never runs out. This log keeps, per group, topic and partition, the delivery
counts of offsets not yet committed, in an internal compacted topic (``attempts_topic``,
``_dotmac.attempts`` by default, one partition), the way Kafka Connect keeps its offsets:

* key ``"{group_id}|{topic}|{partition}"`` (topic names hold no ``|``, so the last two
  fields split off unambiguously); value JSON ``{"deliveries": {"<offset>": n}}``. The
  latest value of a key replaces the earlier ones (compaction keeps only it).
* Written before a delivery that must survive a crash is handed out: the first record a
  consumer fetches from a partition after each assignment (the committed position, where a
  crash-looping record sits), a record the log already counts, every in-process
  redelivery, and each record of a careful replay (the receiver's: a partition whose first
  record was already counted is handed out one record at a time for a while). Other records
  are not written: the healthy path pays one write per partition per assignment and nothing
  per record.
* Read when a consumer first fetches from a newly assigned partition: this process follows
  the topic with one group-less consumer and reads on from where it was to the current end,
  so a new owner sees the previous owner's last write (that write was acknowledged before the
  record it counts was handed out). That consumer's partition is paused except while a
  catch-up waits for records, so no fetch is left waiting at the end of the log: the next
  catch-up would wait for it to return (on Tansu, which does not end a waiting fetch when
  records arrive, up to ``fetch_max_wait_ms``; each catch-up after one of this bus's writes).

Why not the committed offset's metadata: brokers that speak the Kafka protocol need not keep
it (Tansu, our test broker, accepts an OffsetCommit with metadata and returns it empty), and a
commit happens after records are handled, too late for the one that crashed its consumer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from dotmac.events.adapters.kafka.bootstrap import start_client
from dotmac.events.adapters.kafka.errors import kafka_errors
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.errors import TransportError

__all__ = ["AttemptLog", "attempts_key", "decode_deliveries", "encode_deliveries"]

Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers

_TOPIC_EXISTS = 36
_COMPACTED = {"cleanup.policy": "compact"}  # only each key's latest value is needed
_READ_WAIT_MS = 200  # one fetch's wait while behind the end: data is there, it returns early


def attempts_key(group_id: str, topic: str, partition: int) -> str:
    """The log's key for one partition of ``topic`` consumed by the Kafka group ``group_id``."""
    return f"{group_id}|{topic}|{partition}"


def encode_deliveries(deliveries: Mapping[int, int]) -> bytes:
    return json.dumps(
        {"deliveries": {str(offset): n for offset, n in sorted(deliveries.items())}},
        separators=(",", ":"),
    ).encode()


def decode_deliveries(value: bytes | None) -> dict[int, int]:
    """Offset -> delivery count from a stored value; {} for a tombstone or foreign bytes (a
    count that cannot be read must not stop consumption)."""
    if not value:
        return {}
    try:
        raw = json.loads(value)["deliveries"]
        return {int(offset): int(n) for offset, n in raw.items() if int(n) > 0}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


class AttemptLog:
    """One bus's view of the attempts topic: it writes counts and follows what others wrote."""

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        *,
        send: Callable[[list[Record]], Awaitable[None]],
        ensure_topic: Callable[[str], Awaitable[int]],
        admin: Callable[[], Awaitable[AIOKafkaAdminClient]],
    ) -> None:
        self.topic = topic
        self.writes = 0  # records written by this bus (the cost, for stats and tests)
        self._config = config
        self._send = send
        self._ensure_topic = ensure_topic
        self._admin = admin
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._latest: dict[str, bytes] = {}  # key -> latest value read or written
        self._lock = asyncio.Lock()  # one catch-up at a time; it also guards starting

    async def _start(self) -> AIOKafkaConsumer:
        """Create the topic (compacted) if it is missing, then follow it from its beginning."""
        if self._consumer is not None:
            return self._consumer
        config = self._config
        if config.auto_create_topics:
            admin = await self._admin()
            replicas = config.replication_factor
            new = (
                NewTopic(self.topic, 1, -1, replica_assignments={}, topic_configs=_COMPACTED)
                if replicas is None
                else NewTopic(self.topic, 1, replicas, topic_configs=_COMPACTED)
            )
            with kafka_errors(f"create topic {self.topic!r}"):
                response = await admin.create_topics([new])
            for _, code, message in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise TransportError(f"kafka: creating topic {self.topic!r} failed: {message}")
        partitions = await self._ensure_topic(self.topic)
        consumer = AIOKafkaConsumer(**config.consumer_kwargs(group=None, private=True))
        with kafka_errors(f"attempts reader start on {self.topic!r}"):
            await start_client(consumer, config)
            try:
                self._tps = [TopicPartition(self.topic, p) for p in range(partitions)]
                consumer.assign(self._tps)
                consumer.pause(*self._tps)  # before aiokafka fetches from the default position
                await consumer.seek_to_beginning(*self._tps)
            except BaseException:
                await consumer.stop()
                raise
        self._consumer = consumer
        return consumer

    async def catch_up(self) -> None:
        """Read what was written to the log up to its end now (from the start the first time)."""
        async with self._lock:
            consumer = await self._start()
            with kafka_errors(f"read of {self.topic!r}"):
                async with asyncio.timeout(self._config.request_timeout_ms / 1000):
                    ends = await consumer.end_offsets(self._tps)
                    while behind := [
                        tp for tp in self._tps if await consumer.position(tp) < ends[tp]
                    ]:
                        consumer.resume(*behind)
                        try:
                            batch = await consumer.getmany(*behind, timeout_ms=_READ_WAIT_MS)
                        finally:
                            consumer.pause(*behind)  # before aiokafka fetches at the end
                        for records in batch.values():
                            self._take(records)

    def _take(self, records: Sequence[Any]) -> None:
        latest = self._latest
        for record in records:
            if record.key is None:
                continue
            key = bytes(record.key).decode(errors="replace")
            if record.value:
                latest[key] = bytes(record.value)
            else:
                latest.pop(key, None)

    def stored(self, group_id: str, topic: str, partition: int) -> dict[int, int]:
        """The delivery counts last written for that partition (as of the last catch-up)."""
        return decode_deliveries(self._latest.get(attempts_key(group_id, topic, partition)))

    async def write(
        self, group_id: str, topic: str, counts: Sequence[tuple[int, Mapping[int, int]]]
    ) -> None:
        """Store each ``(partition, {offset: deliveries})`` in one produce; returns when the
        broker acknowledged it (``acks``)."""
        records: list[Record] = []
        for partition, deliveries in counts:
            key = attempts_key(group_id, topic, partition)
            value = encode_deliveries(deliveries)
            self._latest[key] = value
            records.append((self.topic, key.encode(), value, []))
        if records:
            await self._send(records)
            self.writes += len(records)

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with kafka_errors("attempts reader stop"):
                await consumer.stop()
