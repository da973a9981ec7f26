"""RedisClusterBus: the EventBus contract on Redis Cluster, each topic split into partitions.

Wire format: as on a single server (``data``, optional ``key``, header fields on dead letters),
in the partition streams of ``partitions.py``. See ``adapters/redis/CLUSTER.md`` for
guarantees, partition assignment, resizing and the scaling model.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from dotmac.events.adapters.redis.backlog import summed
from dotmac.events.adapters.redis.consumers import ConsumerNames
from dotmac.events.adapters.redis.errors import translate
from dotmac.events.adapters.redis.records import delete_all, write_record
from dotmac.events.adapters.redis.reporting import Reporter
from dotmac.events.adapters.redis_cluster.delayed import ClusterDelayMover, schedule
from dotmac.events.adapters.redis_cluster.partitions import PartitionMap, topic_of_key
from dotmac.events.adapters.redis_cluster.publisher import ClusterPublisher
from dotmac.events.adapters.redis_cluster.reader import parse_positions, read_partitions
from dotmac.events.adapters.redis_cluster.receiver import PartitionedReceiver
from dotmac.events.adapters.redis_cluster.stats import PartitionStats, partition_stats
from dotmac.events.adapters.redis_cluster_config import RedisClusterConfig
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import BacklogStats, HealthStatus
from dotmac.events.codec import Codec
from dotmac.events.engine import TransportBus
from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer
from dotmac.events.transport import LogRecord, Receiver

__all__ = ["RedisClusterBus", "create_redis_cluster_bus"]

logger = logging.getLogger("dotmac.events.redis_cluster")

_CLIENT_RETRIES = 3  # redis-py resends after a lost connection or MOVED, with backoff


def _build_client(config: RedisClusterConfig) -> RedisCluster:
    options: dict[str, Any] = {
        "startup_nodes": [ClusterNode(host, port) for host, port in config.startup_nodes()],
        "socket_connect_timeout": config.connection_timeout,
        "socket_timeout": config.consumer_timeout,
        "max_connections": config.max_connections,
        "retry": Retry(
            ExponentialWithJitterBackoff(
                base=config.reconnect_backoff_base_ms / 1000,
                cap=config.reconnect_backoff_max_ms / 1000,
            ),
            _CLIENT_RETRIES,
        ),
        "decode_responses": False,
    }
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password
    elif config.url is not None:
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(config.url)
        if parts.username:
            options["username"] = unquote(parts.username)
        if parts.password:
            options["password"] = unquote(parts.password)
    if config.tls:
        options.update(
            ssl=True,
            ssl_ca_certs=config.ssl_ca_certs,
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
            ssl_cert_reqs=config.ssl_cert_reqs,
            ssl_check_hostname=config.ssl_check_hostname,
        )
    return RedisCluster(**options)


class RedisClusterBus(TransportBus):
    """The bus on Redis Cluster. See ``adapters/redis/CLUSTER.md`` for guarantees and tuning.

    Pass ``client`` to share a ``redis.asyncio.cluster.RedisCluster`` (``decode_responses``
    off, socket timeout above ``config.block_ms``); the bus then never closes it.
    """

    adapter = "redis-cluster"

    def __init__(
        self,
        config: RedisClusterConfig | None = None,
        *,
        client: RedisCluster | None = None,
        codec: Codec | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config or RedisClusterConfig()
        if not isinstance(self.config, RedisClusterConfig):
            raise ConfigurationError(
                "config", f"must be a RedisClusterConfig, got {type(config).__name__}"
            )
        if client is not None and not isinstance(client, RedisCluster):
            raise ConfigurationError(
                "client",
                f"must be a redis.asyncio.cluster.RedisCluster, got {type(client).__name__}",
            )
        super().__init__(
            codec=codec,
            observer=observer,
            close_timeout=self.config.close_timeout,
            max_event_bytes=self.config.max_event_bytes,
        )
        self._client = client
        self._owns_client = client is None
        self._map = PartitionMap(self.config.key_prefix)
        self._publisher: ClusterPublisher | None = None
        self._mover: ClusterDelayMover | None = None
        self._consumer_names = ConsumerNames(self.config.consumer_name)
        self._read_backoff = ExponentialBackoff(
            base_ms=self.config.reconnect_backoff_base_ms,
            max_ms=self.config.reconnect_backoff_max_ms,
            jitter=True,
        )
        self._reporter = Reporter(
            observer=self.observer,
            adapter=self.adapter,
            logger=logger,
            label="redis cluster",
            target=self.config.describe_target() if client is None else "shared client",
            secrets=self.config.secrets,
        )
        self.pattern_refresh = self.config.pattern_refresh

    @property
    def client(self) -> RedisCluster:
        """The cluster client (created on first use, so the bus can be built outside a loop)."""
        if self._client is None:
            self._client = _build_client(self.config)
        return self._client

    @property
    def lost_to_trimming(self) -> int:
        """Pending entries trimmed from a partition before they were handled, since the start."""
        return self._reporter.lost_to_trimming

    def streams(self, topic: str) -> list[str]:
        """The stream keys of ``topic``'s partitions, partition 0 first."""
        return self._map.streams(topic, self.config.partitions_of(topic))

    def partition_of(self, event: Event) -> int:
        """The partition ``event`` would be published to (by its key)."""
        stream = self._get_publisher().place(event)
        return self.streams(event.topic).index(stream)

    # --- transport primitives ----------------------------------------------------------------

    def _get_publisher(self) -> ClusterPublisher:
        if self._publisher is None:
            self._publisher = ClusterPublisher(self.client, self.config, self.streams)
        return self._publisher

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        await self._get_publisher().send(batch)

    async def _send_raw(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """One entry with a field per header, in the partition ``key`` picks."""
        stream = self._get_publisher().place(Event(topic, None, key=key))
        await write_record(
            cast(Redis, self.client),
            stream,
            data,
            key,
            headers,
            max_length=self.config.max_stream_length,
            secrets=self.config.secrets,
        )

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int:
        """XDEL each ``partition:entry-id`` from its partition (one pipeline)."""
        streams = self.streams(topic)
        wanted = (
            parse_positions("positions", ",".join(positions), len(streams)) if positions else {}
        )
        by_stream: dict[str, list[str]] = {}
        for position in positions:
            partition, _, entry_id = position.partition(":")
            by_stream.setdefault(streams[int(partition)], []).append(entry_id)
        if not wanted:
            return 0
        try:
            pipe = self.client.pipeline(transaction=False)
            for stream, ids in by_stream.items():
                pipe.xdel(stream, *ids)
            return sum(int(n) for n in await pipe.execute())
        except Exception as exc:
            raise translate(exc, doing=f"delete from {topic}", secrets=self.config.secrets) from exc

    def _read_log(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]:
        return read_partitions(
            self.client,
            self.streams(topic),
            since=since,
            until=until,
            limit=limit,
            follow=follow,
            poll=self.config.block_ms / 1000,
            secrets=self.config.secrets,
            backoff=self._read_backoff,
        )

    async def _delete_all(self, topic: str) -> None:
        await asyncio.gather(
            *(
                delete_all(cast(Redis, self.client), stream, secrets=self.config.secrets)
                for stream in self.streams(topic)
            )
        )

    async def _schedule(self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float) -> None:
        """Hold the events in their partitions' delayed sets until ``due`` (``delayed.py``)."""
        publisher = self._get_publisher()
        placed = [(self._map.delayed_key(publisher.place(e)), e, data) for e, data in batch]
        try:
            await schedule(self.client, placed, due)
        except Exception as exc:
            raise translate(
                exc, doing=f"delay events for {topic}", secrets=self.config.secrets, publish=True
            ) from exc
        mover = self._delay_mover(topic)
        if due - self._now() < self.config.delay_poll_interval:
            mover.poke()

    def _delay_mover(self, topic: str) -> ClusterDelayMover:
        """The mover of due events (started on first use), now also watching ``topic``."""
        if self._mover is None:
            self._mover = ClusterDelayMover(
                self.client,
                max_stream_length=self.config.max_stream_length,
                poll_interval=self.config.delay_poll_interval,
                report=functools.partial(self._reporter.failure, "_delayed"),
            )
            self._mover.start()
        self._mover.watch([(self._map.delayed_key(s), s) for s in self.streams(topic)])
        return self._mover

    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int, from_beginning: bool = False
    ) -> Receiver:
        streams = self.streams(topic)
        self._delay_mover(topic)
        latest = private or self.config.new_group_start == "latest"
        receiver = PartitionedReceiver(
            self.client,
            self.config,
            topic=topic,
            streams=streams,
            group=group,
            consumer=self._consumer_names.take(topic, group),
            private=private,
            start_id="$" if latest and not from_beginning else "0",
            report=functools.partial(self._reporter.failure, topic),
            on_trimmed=functools.partial(self._reporter.trimmed, topic, group),
        )
        try:
            # Learn the slot map first: redis-py opening a node's first connections from many
            # tasks at once, mid-discovery, can hand one of them a closed connection.
            await self.client.initialize()
            await receiver.open()
        except Exception as exc:
            raise translate(
                exc, doing=f"create group {group} on {topic}", secrets=self.config.secrets
            ) from exc
        return receiver

    def _prefetch(self, concurrency: int) -> int:
        return max(self.config.prefetch_count, concurrency)

    async def _list_topics(self) -> list[str]:
        """Topics with a partition stream under ``key_prefix``: SCAN on every master."""
        prefix = self.config.key_prefix
        match = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?") + "{*}"
        found: set[str] = set()
        try:
            async for key in self.client.scan_iter(match=match, count=1000, _type="stream"):
                named = topic_of_key(prefix, key.decode("utf-8", "replace"))
                if named is not None:
                    found.add(named[0])
        except Exception as exc:
            raise translate(exc, doing="scan for topics", secrets=self.config.secrets) from exc
        return sorted(found)

    async def _drop_topic(self, topic: str) -> None:
        keys = [k for s in self.streams(topic) for k in (s, self._map.delayed_key(s))]
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            await pipe.execute()
        except Exception as exc:
            raise translate(exc, doing=f"delete {topic}", secrets=self.config.secrets) from exc

    async def _close_transport(self) -> None:
        mover, self._mover = self._mover, None
        if mover is not None:
            await mover.stop()
        if self._owns_client and self._client is not None:
            try:
                await self._client.aclose()
            except Exception as exc:
                logger.warning("redis cluster: closing the connections failed: %r", exc)

    # --- inspection ----------------------------------------------------------------------------

    async def health(self) -> HealthStatus:
        """PING every master; unhealthy when one does not answer."""
        return await self._reporter.health(self._ping_masters, closed=self.closed)

    async def _ping_masters(self, details: dict[str, Any]) -> None:
        await self.client.initialize()
        masters = self.client.get_primaries()
        details["masters"] = len(masters)
        await asyncio.gather(
            *(self.client.execute_command("PING", target_nodes=node) for node in masters)
        )

    async def partition_stats(self, topic: str, group: str | None = None) -> list[PartitionStats]:
        """Each partition's length, the group's lag, pending and oldest pending age, and the
        master holding it.

        Raises:
            TransportError: the cluster could not be read.
        """
        try:
            return await partition_stats(self.client, self.streams(topic), group)
        except Exception as exc:
            raise translate(exc, doing=f"stats of {topic}", secrets=self.config.secrets) from exc

    async def stats(
        self, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> BacklogStats:
        """:meth:`partition_stats` summed over the partitions (the oldest age is the oldest of
        any partition), and the dead-letter topic's length over its partitions."""
        dlq = self._stats_dlq_topic(topic, group, dlq_topic)
        parts = await self.partition_stats(topic, group)
        try:
            pipe = self.client.pipeline(transaction=False)
            for stream in self.streams(dlq):
                pipe.xlen(stream)
            depth = sum(int(n) for n in await pipe.execute())
        except Exception as exc:
            raise translate(exc, doing=f"stats of {dlq}", secrets=self.config.secrets) from exc
        return summed(topic, group, parts, depth)


def create_redis_cluster_bus(
    config: RedisClusterConfig | None = None,
    *,
    client: RedisCluster | None = None,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> RedisClusterBus:
    """Create a Redis Cluster bus; safe to call outside a running event loop.

    Raises:
        ConfigurationError: ``config`` or ``client`` is not of the expected type.
    """
    return RedisClusterBus(config, client=client, codec=codec, observer=observer)
