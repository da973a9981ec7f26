"""RedisStreamsBus: the EventBus contract on Redis Streams consumer groups.

Wire format (one stream entry per event, stream key ``key_prefix + topic``)::

    data  the codec's bytes (JsonCodec: the versioned JSON envelope with id, key, timestamp,
          tenant_id, headers, metadata and payload)
    key   the event key, when it has one (so consumers route by key without decoding)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dotmac.events.adapters.redis.backlog import ask_backlog, stream_backlogs, summed
from dotmac.events.adapters.redis.consumers import ConsumerNames
from dotmac.events.adapters.redis.delayed import DelayMover, schedule
from dotmac.events.adapters.redis.errors import translate
from dotmac.events.adapters.redis.publisher import RedisPublisher
from dotmac.events.adapters.redis.reader import read_stream
from dotmac.events.adapters.redis.receiver import RedisReceiver
from dotmac.events.adapters.redis.records import delete_all, delete_entries, write_record
from dotmac.events.adapters.redis.reporting import Reporter
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import BacklogStats, HealthStatus
from dotmac.events.codec import Codec
from dotmac.events.engine import TransportBus
from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer
from dotmac.events.transport import LogRecord, Receiver

__all__ = ["RedisStreamsBus", "create_redis_bus"]

logger = logging.getLogger("dotmac.events.redis")


def _build_client(config: RedisConfig) -> Redis:
    options: dict[str, Any] = {
        "socket_connect_timeout": config.connection_timeout,
        "socket_timeout": config.consumer_timeout,
        "max_connections": config.max_connections,
        "timeout": config.connection_timeout,  # waiting for a free pooled connection
        "retry": Retry(NoBackoff(), 0),  # retries are ours: bounded for publish, backoff for reads
        "decode_responses": False,
    }
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password
    tls = config.ssl or (config.url or "").startswith("rediss://")
    if tls:
        options.update(
            ssl_ca_certs=config.ssl_ca_certs,
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
            ssl_cert_reqs=config.ssl_cert_reqs,
            ssl_check_hostname=config.ssl_check_hostname,
        )
    if config.url is not None:
        pool = BlockingConnectionPool.from_url(config.url, **options)
        # from_url lets the URL's values win; the config's explicit credentials must win
        for name in ("username", "password"):
            if name in options:
                pool.connection_kwargs[name] = options[name]
        if tls and not config.url.startswith(("rediss://", "unix://")):
            pool.connection_class = SSLConnection  # ssl=True with a redis:// URL
    else:
        if tls:
            options["connection_class"] = SSLConnection
        pool = BlockingConnectionPool(
            host=config.host or "localhost", port=config.port or 6379, db=config.db or 0, **options
        )
    return Redis.from_pool(pool)


def _glob_escape(text: bytes) -> bytes:
    """``text`` as a literal inside a Redis MATCH pattern."""
    for special in (b"\\", b"*", b"?", b"[", b"]"):
        text = text.replace(special, b"\\" + special)
    return text


class RedisStreamsBus(TransportBus):
    """The bus on Redis Streams. See ``adapters/redis/README.md`` for guarantees and tuning.

    Pass ``client`` to share an existing ``redis.asyncio.Redis`` (it must return bytes, not
    decoded strings, and its socket timeout must exceed ``config.block_ms``); the bus then never
    closes it. ``lost_to_trimming`` counts entries that were trimmed from a stream while still
    pending (each one is also logged and reported to ``observer.error``).
    """

    adapter = "redis"

    def __init__(
        self,
        config: RedisConfig | None = None,
        *,
        client: Redis | None = None,
        codec: Codec | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config or RedisConfig()
        if not isinstance(self.config, RedisConfig):
            raise ConfigurationError(
                "config", f"must be a RedisConfig, got {type(config).__name__}"
            )
        if client is not None and not isinstance(client, Redis):
            raise ConfigurationError(
                "client", f"must be a redis.asyncio.Redis, got {type(client).__name__}"
            )
        super().__init__(
            codec=codec,
            observer=observer,
            close_timeout=self.config.close_timeout,
            max_event_bytes=self.config.max_event_bytes,
        )
        self._client = client
        self._owns_client = client is None
        self._consumer_names = ConsumerNames(self.config.consumer_name)
        self._publish_backoff = ExponentialBackoff(
            base_ms=self.config.reconnect_backoff_base_ms,
            max_ms=self.config.reconnect_backoff_max_ms,
            jitter=True,
        )
        self._publisher: RedisPublisher | None = None
        self._reporter = Reporter(
            observer=self.observer,
            adapter=self.adapter,
            logger=logger,
            label="redis",
            target=self.config.describe_target() if client is None else "shared client",
            secrets=self.config.secrets,
        )
        self.pattern_refresh = self.config.pattern_refresh
        self._mover: DelayMover | None = None

    @property
    def client(self) -> Redis:
        """The redis client (created on first use, so the bus can be built outside a loop)."""
        if self._client is None:
            self._client = _build_client(self.config)
        return self._client

    @property
    def lost_to_trimming(self) -> int:
        """Pending entries trimmed from a stream before they were handled, since the start."""
        return self._reporter.lost_to_trimming

    def stream_key(self, topic: str) -> str:
        """The Redis key of ``topic``'s stream."""
        return f"{self.config.key_prefix}{topic}"

    # --- transport primitives --------------------------------------------------------------

    def _get_publisher(self) -> RedisPublisher:
        if self._publisher is None:
            self._publisher = RedisPublisher(
                self.client, self.config, backoff=self._publish_backoff
            )
        return self._publisher

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """XADD every event; concurrent calls share one pipeline (see ``publisher.py``). On a
        connection error the entries without a reply are resent a bounded number of times
        (an entry whose reply was lost is then duplicated: at-least-once)."""
        await (self._publisher or self._get_publisher()).send(batch)

    async def _send_raw(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """One entry with a field per header (see ``records.py``)."""
        await write_record(
            self.client,
            self.stream_key(topic),
            data,
            key,
            headers,
            max_length=self.config.max_stream_length,
            secrets=self.config.secrets,
        )

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int:
        return await delete_entries(
            self.client, self.stream_key(topic), positions, secrets=self.config.secrets
        )

    async def _delete_all(self, topic: str) -> None:
        await delete_all(self.client, self.stream_key(topic), secrets=self.config.secrets)

    async def _schedule(self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float) -> None:
        """Hold the events in Redis until ``due`` (see ``delayed.py``)."""
        try:
            await schedule(self.client, self.config.key_prefix, topic, batch, due)
        except Exception as exc:
            raise translate(
                exc, doing=f"delay events for {topic}", secrets=self.config.secrets, publish=True
            ) from exc
        mover = self._delay_mover()
        if due - self._now() < self.config.delay_poll_interval:
            mover.poke()

    def _delay_mover(self) -> DelayMover:
        """The mover of due events, started by the first delay or subscription of this bus."""
        if self._mover is None:
            self._mover = DelayMover(
                self.client,
                prefix=self.config.key_prefix,
                max_stream_length=self.config.max_stream_length,
                poll_interval=self.config.delay_poll_interval,
                report=functools.partial(self._reporter.failure, "_delayed"),
            )
            self._mover.start()
        return self._mover

    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int, from_beginning: bool = False
    ) -> Receiver:
        self._delay_mover()
        stream = self.stream_key(topic)
        latest = private or self.config.new_group_start == "latest"
        start = "$" if latest and not from_beginning else "0"
        receiver = RedisReceiver(
            self.client,
            self.config,
            topic=topic,
            stream=stream,
            group=group,
            consumer=self._consumer_names.take(stream, group),
            private=private,
            start_id=start,
            report=functools.partial(self._reporter.failure, topic),
            on_trimmed=functools.partial(self._reporter.trimmed, topic, group, stream),
        )
        await receiver.open()
        return receiver

    async def _list_topics(self) -> list[str]:
        """The streams under ``key_prefix``, by SCAN (it walks the whole keyspace, in steps)."""
        prefix = self.config.key_prefix.encode()
        match = _glob_escape(prefix) + b"*"
        try:
            keys = [
                key async for key in self.client.scan_iter(match=match, count=1000, _type="stream")
            ]
        except Exception as exc:
            raise translate(exc, doing="scan for topics", secrets=self.config.secrets) from exc
        return [key[len(prefix) :].decode("utf-8", "replace") for key in keys]

    def _read_log(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]:
        return read_stream(
            self.client,
            self.stream_key(topic),
            since=since,
            until=until,
            limit=limit,
            follow=follow,
            block_ms=self.config.block_ms,
            secrets=self.config.secrets,
            backoff=self._publish_backoff,
        )

    def _prefetch(self, concurrency: int) -> int:
        return max(self.config.prefetch_count, concurrency)

    async def _drop_topic(self, topic: str) -> None:
        stream = self.stream_key(topic)
        try:
            await self.client.delete(stream)
        except Exception as exc:
            raise translate(exc, doing=f"delete {stream}", secrets=self.config.secrets) from exc

    async def _close_transport(self) -> None:
        mover, self._mover = self._mover, None
        if mover is not None:
            await mover.stop()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                await publisher.aclose()
            except Exception as exc:
                logger.warning("redis: releasing the publish connection failed: %r", exc)
        if self._owns_client and self._client is not None:
            try:
                await self._client.aclose()
            except Exception as exc:
                logger.warning("redis: closing the connection pool failed: %r", exc)

    # --- inspection --------------------------------------------------------------------------

    async def health(self) -> HealthStatus:
        return await self._reporter.health(self._ping, closed=self.closed)

    async def _ping(self, details: dict[str, Any]) -> None:
        try:
            await self.client.ping()
        except redis_errors.ConnectionError:
            # A pooled connection from before a server restart fails once; the retry
            # connects afresh, so only a server that is really away reports unhealthy.
            await self.client.ping()

    async def stats(
        self, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> BacklogStats:
        """``XLEN``, the group's ``lag`` and ``pending`` from ``XINFO GROUPS``, the DLQ's
        ``XLEN``, and the age of the group's oldest pending entry since its first delivery
        (see ``backlog.py``). Two round trips."""
        stream = self.stream_key(topic)
        dlq = self.stream_key(self._stats_dlq_topic(topic, group, dlq_topic))

        async def ask() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            ask_backlog(pipe, stream, group)
            pipe.xlen(dlq)
            return await pipe.execute(raise_on_error=False)

        try:
            try:
                replies = await ask()
            except redis_errors.ConnectionError:  # a pooled connection older than a restart
                replies = await ask()
            depth = replies.pop()
            if isinstance(depth, Exception):
                raise depth
            figures = await stream_backlogs(self.client, [stream], group, replies)
        except Exception as exc:
            raise translate(exc, doing=f"stats of {stream}", secrets=self.config.secrets) from exc
        return summed(topic, group, figures, int(depth))


def create_redis_bus(
    config: RedisConfig | None = None,
    *,
    client: Redis | None = None,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> RedisStreamsBus:
    """Create a Redis Streams bus; safe to call outside a running event loop.

    Raises:
        ConfigurationError: ``config`` or ``client`` is not of the expected type.
    """
    return RedisStreamsBus(config, client=client, codec=codec, observer=observer)
