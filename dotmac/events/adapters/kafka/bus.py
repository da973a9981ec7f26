"""KafkaBus: the EventBus contract on Kafka (aiokafka), via TransportBus.

Publishing: the value is the codec's bytes (the full envelope), the key is the event key in
UTF-8 (aiokafka's default partitioner is murmur2, as in the Java client, so a key lands on the
same partition either client would pick), and Kafka headers repeat the event's headers, its
tenant and metadata so tools that never decode the value can route on them. ``publish`` returns
after the broker acknowledged (``acks``): the record joins the batch aiokafka is lingering on
(``linger_ms``) and only its own delivery is awaited, so concurrent publishes share batches.
``publish_many`` hands the whole batch to the producer as closed per-partition batches (sent
without lingering: the batch is already formed), then waits for all their acknowledgements.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

from dotmac.events.adapters.kafka.attempts import AttemptLog
from dotmac.events.adapters.kafka.bootstrap import start_client
from dotmac.events.adapters.kafka.delay import DelayMover, tier_records
from dotmac.events.adapters.kafka.errors import (
    kafka_errors,
    unless_cancelled,
)
from dotmac.events.adapters.kafka.producing import Record, produce
from dotmac.events.adapters.kafka.reader import read_topic
from dotmac.events.adapters.kafka.receiver import KafkaReceiver
from dotmac.events.adapters.kafka.records import (
    delete_before,
    single_deletes_unsupported,
    write_record,
)
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.bus import BacklogStats, HealthStatus
from dotmac.events.codec import Codec
from dotmac.events.engine import TransportBus
from dotmac.events.engine.health import probe_health
from dotmac.events.errors import (
    AuthenticationError,
    ConfigurationError,
    PublishError,
    TransportError,
)
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer
from dotmac.events.transport import LogRecord, Receiver

__all__ = ["KafkaBus", "create_kafka_bus", "kafka_headers"]

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_TOPIC_EXISTS = 36
_COMPRESSION_LIBS = {"gzip": has_gzip, "snappy": has_snappy, "lz4": has_lz4, "zstd": has_zstd}


def kafka_headers(event: Event) -> list[tuple[str, bytes]]:
    """The Kafka record headers for ``event``: its own headers, then ``dotmac-*`` fields."""
    headers = [(name, value.encode()) for name, value in event.headers.items()]
    headers.append(("dotmac-event-id", str(event.id).encode()))
    if event.tenant_id is not None:
        headers.append(("dotmac-tenant-id", event.tenant_id.encode()))
    metadata = event.metadata
    if metadata is not None:
        for name in (
            "correlation_id",
            "causation_id",
            "producer",
            "content_type",
            "schema_version",
        ):
            value = getattr(metadata, name)
            if value is not None:
                headers.append((f"dotmac-{name.replace('_', '-')}", value.encode()))
    return headers


class KafkaBus(TransportBus):
    """The Kafka bus. Construct it anywhere; clients start on first use in the running loop."""

    adapter = "kafka"

    def __init__(
        self,
        config: KafkaConfig | None = None,
        *,
        codec: Codec | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config or KafkaConfig()
        compression = self.config.compression_type
        if compression is not None and not _COMPRESSION_LIBS[compression]():
            raise ConfigurationError(
                "compression_type",
                f'{compression!r} needs cramjam: pip install "dotmac-events[kafka]"',
            )
        super().__init__(
            codec=codec,
            observer=observer,
            close_timeout=self.config.close_timeout,
            max_event_bytes=self.config.max_event_bytes or self.config.max_request_size,
        )
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None  # group-less consumer for stats()
        self._lock: asyncio.Lock | None = None
        self._topic_lock: asyncio.Lock | None = None
        self._topics: dict[str, int] = {}  # known topic -> partition count
        self._receivers: set[KafkaReceiver] = set()
        self._delays: DelayMover | None = None
        self._attempts: AttemptLog | None = None  # delivery counts of named groups
        self.pattern_refresh = self.config.pattern_refresh

    # --- clients -------------------------------------------------------------------------------

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._get_lock():
                if self._producer is None:
                    producer = AIOKafkaProducer(**self.config.producer_kwargs())
                    doing = "producer start"
                    if self.config.enable_idempotence:
                        doing += " with enable_idempotence (the broker must grant a producer id)"
                    with kafka_errors(doing, publishing=True):
                        await start_client(producer, self.config)
                    self._producer = producer
        return self._producer

    async def _get_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            async with self._get_lock():
                if self._admin is None:
                    admin = AIOKafkaAdminClient(**self.config.admin_kwargs())
                    with kafka_errors("admin client start"):
                        await start_client(admin, self.config)
                    self._admin = admin
        return self._admin

    async def _get_offsets_consumer(self) -> AIOKafkaConsumer:
        if self._offsets is None:
            async with self._get_lock():
                if self._offsets is None:
                    consumer = AIOKafkaConsumer(
                        **self.config.consumer_kwargs(group=None, private=True)
                    )
                    with kafka_errors("offsets consumer start"):
                        await start_client(consumer, self.config)
                    self._offsets = consumer
        return self._offsets

    def _new_topic(self, topic: str) -> NewTopic:
        replicas = self.config.replication_factor
        if replicas is None:  # -1: the broker's default.replication.factor (Kafka >= 2.4)
            return NewTopic(topic, self.config.num_partitions, -1, replica_assignments={})
        return NewTopic(topic, self.config.num_partitions, replicas)

    async def _ensure_topic(self, topic: str) -> int:
        """Create ``topic`` if configured to and unknown; return its partition count."""
        known = self._topics.get(topic)
        if known is not None:
            return known
        admin = await self._get_admin()
        if self._topic_lock is None:
            self._topic_lock = asyncio.Lock()
        async with self._topic_lock:  # one creation per topic, not one per concurrent publish
            known = self._topics.get(topic)
            if known is not None:
                return known
            with kafka_errors(f"create topic {topic!r}"):
                if self.config.auto_create_topics:
                    response = await admin.create_topics([self._new_topic(topic)])
                    for _, code, message in response.topic_errors:
                        if code not in (0, _TOPIC_EXISTS):
                            raise TransportError(
                                f"kafka: creating topic {topic!r} failed: {message}"
                            )
                described = await admin.describe_topics([topic])
            partitions = len(described[0]["partitions"]) if described else 0
            if partitions == 0:
                raise TransportError(f"kafka: topic {topic!r} does not exist")
            self._topics[topic] = partitions
            self._topic_appeared()  # this process's pattern subscriptions need not wait
            return partitions

    # --- transport primitives ----------------------------------------------------------------

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        await self._send_records(
            [
                (
                    event.topic,
                    None if event.key is None else event.key.encode(),
                    data,
                    kafka_headers(event),
                )
                for event, data in batch
            ]
        )

    async def _send_records(self, records: list[Record]) -> None:
        """Produce records to their topics (checked and created first), all within
        ``delivery_timeout_ms``; see ``producing.py`` for resends and errors."""
        deadline = asyncio.get_running_loop().time() + self.config.delivery_timeout_ms / 1000
        producer = self._producer
        if producer is None or any(record[0] not in self._topics for record in records):
            try:
                async with asyncio.timeout_at(deadline):
                    producer = await self._ready_to_send({record[0] for record in records})
            except TimeoutError as exc:
                raise PublishError(
                    "kafka: publish failed (retriable): checking the topics and starting the "
                    "producer took longer than delivery_timeout_ms",
                    retryable=True,
                    may_have_been_written=False,
                ) from exc
        await produce(producer, records, self.config, deadline)

    async def _ready_to_send(self, topics: set[str]) -> AIOKafkaProducer:
        """Check and create (or look up) the topics, start the producer: once per topic, so
        later publishes skip straight to the producer."""
        for topic in topics:
            if not _TOPIC_NAME.match(topic):
                raise PublishError(
                    f"kafka: {topic!r} is not a valid topic name ([A-Za-z0-9._-]{{1,249}})",
                    retryable=False,
                    may_have_been_written=False,
                )
            try:
                await self._ensure_topic(topic)
            except AuthenticationError:
                raise
            except TransportError as exc:  # nothing was produced yet
                raise PublishError(
                    str(exc), retryable=exc.retryable, may_have_been_written=False
                ) from exc
        return await self._get_producer()

    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int, from_beginning: bool = False
    ) -> Receiver:
        if not _TOPIC_NAME.match(topic):
            raise ConfigurationError("topic", f"{topic!r} is not a valid Kafka topic name")
        if not _TOPIC_NAME.match(group):
            raise ConfigurationError("group", f"{group!r}: use letters, digits, '.', '_', '-'")
        partitions = await self._ensure_topic(topic)
        self._start_delay_mover()  # joins beside the receiver; moves what dead processes delayed
        receiver = KafkaReceiver(
            self.config,
            topic,
            group,
            private=private,
            from_beginning=from_beginning,
            on_close=self._receivers.discard,
            attempts=None if private else self._attempt_log(),
        )
        await receiver.start(range(partitions))
        self._receivers.add(receiver)
        return receiver

    async def _schedule(self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float) -> None:
        """Hold the events in a delay tier topic until ``due`` (see ``delay.py``): one produce,
        acknowledged as a publish is. The target topic is checked (and created) now, so a bad
        one fails here, not later in a mover."""
        await self._ready_to_send({topic})
        held = [
            (None if event.key is None else event.key.encode(), data, kafka_headers(event))
            for event, data in batch
        ]
        await self._send_records(tier_records(self.config, topic, held, due, time.time()))
        self._start_delay_mover()

    def _attempt_log(self) -> AttemptLog | None:
        """The attempts log named groups keep delivery counts in (see ``attempts.py``); None
        when ``attempts_topic`` is None. It opens its topic on first use."""
        if self.config.attempts_topic is None:
            return None
        if self._attempts is None:
            self._attempts = AttemptLog(
                self.config,
                self.config.attempts_topic,
                send=self._send_records,
                ensure_topic=self._ensure_topic,
                admin=self._get_admin,
            )
        return self._attempts

    def _start_delay_mover(self) -> None:
        """Run this bus's delay mover from its first delay or subscription, in the background
        (unless ``delay_mover=False``): a group join takes a while, and a subscriber's mover
        is ready by the time it delays anything."""
        if not self.config.delay_mover or self._closing:
            return
        if self._delays is None:
            where = self.config.delay_topic_prefix
            self._delays = DelayMover(
                self.config,
                send=self._send_records,
                ensure_topic=self._ensure_topic,
                report=lambda doing, exc: self.observer.error(
                    where, adapter=self.adapter, where=doing, error=exc
                ),
            )
        self._delays.start()

    async def _send_raw(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """One record with native headers (see ``records.py``)."""
        if not _TOPIC_NAME.match(topic):
            raise PublishError(
                f"kafka: {topic!r} is not a valid topic name ([A-Za-z0-9._-]{{1,249}})"
            )
        await self._ensure_topic(topic)
        await write_record(await self._get_producer(), topic, data, key, headers)

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int:
        raise single_deletes_unsupported()

    async def _delete_all(self, topic: str) -> None:
        """DeleteRecords up to each partition's end offset now (see ``records.py``)."""
        admin = await self._get_admin()
        with kafka_errors("list topics"):
            if topic not in set(await admin.list_topics()):
                return
        await delete_before(admin, (await self._topic_extent(topic))[1])

    def _prefetch(self, concurrency: int) -> int:
        return max(500, 4 * concurrency)

    def _read_log(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]:
        return read_topic(
            self.config,
            topic,
            self._ensure_topic,
            since=since,
            until=until,
            limit=limit,
            follow=follow,
        )

    async def _list_topics(self) -> list[str]:
        """The cluster's topics from its metadata, as a regex subscription would see them."""
        admin = await self._get_admin()
        with kafka_errors("list topics"):
            return list(await admin.list_topics())

    async def _drop_topic(self, topic: str) -> None:
        if self._topics.pop(topic, None) is None:
            return
        admin = await self._get_admin()
        with kafka_errors(f"delete topic {topic!r}"):
            await admin.delete_topics([topic])

    async def _close_transport(self) -> None:
        failure: BaseException | None = None
        delays, self._delays = self._delays, None
        if delays is not None:  # first: it produces through this bus's producer
            try:
                await delays.stop()
            except Exception as exc:
                failure = exc
        attempts, self._attempts = self._attempts, None
        if attempts is not None:
            try:
                await attempts.close()
            except Exception as exc:
                failure = failure or exc
        producer, admin, offsets = self._producer, self._admin, self._offsets
        self._producer = self._admin = self._offsets = None
        # Every client is closed even when an earlier one fails; the first failure is raised.
        for doing, stop in (
            ("producer stop", producer.stop if producer is not None else None),
            ("offsets consumer stop", offsets.stop if offsets is not None else None),
            ("admin client close", admin.close if admin is not None else None),
        ):
            if stop is None:
                continue
            try:
                with kafka_errors(doing):
                    await unless_cancelled(stop())
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    # --- health and stats ----------------------------------------------------------------------

    async def health(self) -> HealthStatus:
        """Healthy when the cluster's metadata names at least one broker, within
        ``request_timeout_ms``."""
        return await probe_health(
            self._describe_cluster,
            adapter=self.adapter,
            closed=self.closed,
            details={"target": ",".join(self.config.bootstrap_list())},
            secrets=tuple(s for s in (self.config.sasl_password,) if s),
        )

    async def _describe_cluster(self, details: dict[str, Any]) -> None:
        async with asyncio.timeout(self.config.request_timeout_ms / 1000):
            admin = await self._get_admin()
            with kafka_errors("metadata request"):
                cluster = await admin.describe_cluster()
        brokers = cluster.get("brokers") or []
        details.update(
            brokers=len(brokers),
            cluster_id=cluster.get("cluster_id"),
            controller_id=cluster.get("controller_id"),
        )
        if not brokers:
            raise TransportError("kafka: the cluster's metadata names no broker")

    async def stats(
        self, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> BacklogStats:
        """Length (end minus start offsets), lag (end minus the group's committed offsets),
        the DLQ topic's length, and what only a consuming process knows: ``pending`` (handed out
        by this bus's consumers of the group, not yet acked) and ``oldest_pending_age`` (since
        the first fetch of the longest-held of those). Kafka stores neither, so a bus without a
        live subscription to ``topic`` in ``group`` (the CLI, a monitoring process) reports
        None for both. Topics that do not exist count as empty and are not created."""
        admin = await self._get_admin()
        with kafka_errors("list topics"):
            existing = set(await admin.list_topics())
        length, ends = await self._topic_extent(topic) if topic in existing else (0, {})
        dlq_topic = self._stats_dlq_topic(topic, group, dlq_topic)
        dlq_depth = (await self._topic_extent(dlq_topic))[0] if dlq_topic in existing else 0
        lag = pending = oldest = None
        if group is not None:
            if ends:
                with kafka_errors(f"committed offsets of group {group!r}"):
                    committed = await admin.list_consumer_group_offsets(
                        self.config.group_id(group, topic), partitions=list(ends)
                    )
                starts = await self._starts(list(ends))
                lag = 0
                for tp, end in ends.items():
                    meta = committed.get(tp)
                    position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
                    lag += max(end - position, 0)
            else:
                lag = 0
            mine = [r for r in self._receivers if r.group == group and r.topic == topic]
            if mine:
                pending = sum(r.pending() for r in mine)
                held = [r.oldest_pending_since() for r in mine]
                since = min((t for t in held if t is not None), default=None)
                oldest = None if since is None else time.monotonic() - since
        return BacklogStats(
            topic=topic,
            group=group,
            length=length,
            lag=lag,
            pending=pending,
            oldest_pending_age=oldest,
            dlq_depth=dlq_depth,
        )

    async def _topic_extent(self, topic: str) -> tuple[int, dict[TopicPartition, int]]:
        admin = await self._get_admin()
        with kafka_errors(f"describe topic {topic!r}"):
            described = await admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
        consumer = await self._get_offsets_consumer()
        with kafka_errors(f"end offsets of {topic!r}"):
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        starts = await self._starts(tps)
        return sum(ends[tp] - starts[tp] for tp in tps), ends

    async def _starts(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = await self._get_offsets_consumer()
        with kafka_errors("beginning offsets"):
            starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        return starts


def create_kafka_bus(
    config: KafkaConfig | None = None,
    *,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> KafkaBus:
    """Create a Kafka bus; safe to call outside a running event loop.

    Raises:
        ConfigurationError: the config asks for something this installation cannot do
            (a compression library that is missing).
    """
    return KafkaBus(config, codec=codec, observer=observer)
