"""NatsJetStreamBus: the EventBus contract on NATS JetStream streams and pull consumers.

Wire format (one JetStream message per event, subject ``subject_prefix.<topic>``)::

    payload       the codec's bytes (JsonCodec: the versioned JSON envelope with id, key,
                  timestamp, tenant_id, headers, metadata and payload)
    Nats-Msg-Id   the event id: the stream stores a retried publish once (an event replayed
                  from a dead letter, marked with ``dotmac-replay-id``, gets
                  ``<event id>:replay:<replay id>``, so the replay is not dropped as a duplicate)
    Dotmac-Key    the event key, when it has one (so consumers route by key without decoding)

Dead letters and their replays are records written as they are (``send_record``), with their
transport headers as NATS headers (see ``records.py``).
One stream per topic keeps stats, limits, purges and reads per topic, and lets an operator
tune one topic's retention with the ``nats`` CLI without touching the others.
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from dotmac.events.adapters.nats.delayed import DelayMover, delayed_message
from dotmac.events.adapters.nats.errors import nats_errors, translate
from dotmac.events.adapters.nats.publisher import NatsPublisher, Outgoing
from dotmac.events.adapters.nats.reader import read_stream
from dotmac.events.adapters.nats.receiver import PRIVATE_INACTIVE, NatsReceiver
from dotmac.events.adapters.nats.records import (
    KEY_HEADER,
    MSG_ID_HEADER,
    delete_all,
    delete_messages,
    key_header_value,
    record_headers,
)
from dotmac.events.adapters.nats.streams import StreamCatalog
from dotmac.events.adapters.nats_config import NatsConfig
from dotmac.events.bus import BacklogStats, HealthStatus
from dotmac.events.codec import Codec
from dotmac.events.dlq.headers import REPLAY_ID
from dotmac.events.engine import TransportBus
from dotmac.events.engine.health import probe_health, scrub
from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event
from dotmac.events.observability.observer import Observer
from dotmac.events.transport import LogRecord, Receiver

__all__ = ["NatsJetStreamBus", "create_nats_bus"]

logger = logging.getLogger("dotmac.events.nats")


def _tls_context(config: NatsConfig) -> ssl.SSLContext | None:
    tls = config.tls or any(
        s.strip().startswith(("tls://", "wss://")) for s in config.servers.split(",")
    )
    if not tls:
        return None
    context = ssl.create_default_context(cafile=config.tls_ca_file)
    if config.tls_cert_file and config.tls_key_file:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


class NatsJetStreamBus(TransportBus):
    """The bus on NATS JetStream. See ``adapters/nats/README.md`` for guarantees and tuning.

    Pass ``client`` to share a connected ``nats.aio.client.Client``; the bus then never closes
    it. The connection is made on first use (``await bus.connect()`` makes it at once).
    """

    adapter = "nats"

    def __init__(
        self,
        config: NatsConfig | None = None,
        *,
        client: Client | None = None,
        codec: Codec | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config or NatsConfig()
        if not isinstance(self.config, NatsConfig):
            raise ConfigurationError("config", f"must be a NatsConfig, got {type(config).__name__}")
        if client is not None and not isinstance(client, Client):
            raise ConfigurationError(
                "client", f"must be a nats.aio.client.Client, got {type(client).__name__}"
            )
        super().__init__(codec=codec, observer=observer, close_timeout=self.config.close_timeout)
        self._client = client
        self._owns_client = client is None
        self._js: JetStreamContext | None = None
        self._catalog: StreamCatalog | None = None
        self._publisher: NatsPublisher | None = None
        self._mover: DelayMover | None = None
        self.pattern_refresh = self.config.pattern_refresh

    # --- connection --------------------------------------------------------------------------

    async def connect(self) -> Client:
        """The connection (made on first use): reconnects by itself for as long as it takes."""
        if self._client is None:
            self._check_open()
            config = self.config
            options: dict[str, Any] = {
                "servers": [s.strip() for s in config.servers.split(",")],
                "connect_timeout": config.connect_timeout,
                "reconnect_time_wait": config.reconnect_wait,
                "max_reconnect_attempts": -1,
                "allow_reconnect": True,
                "error_cb": self._connection_error,
                "disconnected_cb": self._disconnected,
                "reconnected_cb": self._reconnected,
            }
            for name, option in (
                ("user", "user"),
                ("password", "password"),
                ("token", "token"),
                ("creds_file", "user_credentials"),
                ("name", "name"),
            ):
                if getattr(config, name) is not None:
                    options[option] = getattr(config, name)
            tls = _tls_context(config)
            if tls is not None:
                options["tls"] = tls
            with nats_errors(f"connect to {config.describe_target()}", config.secrets):
                client = await nats.connect(**options)
            if self._client is None:
                self._client = client
            else:  # another task connected first
                await client.close()
        return self._client

    async def _connection_error(self, exc: Exception) -> None:
        logger.warning("nats: %s", scrub(f"{type(exc).__name__}: {exc}", self.config.secrets))

    async def _disconnected(self) -> None:
        if self._closing:
            return
        logger.warning("nats: disconnected from %s; reconnecting", self.config.describe_target())

    async def _reconnected(self) -> None:
        logger.warning("nats: reconnected to %s", self.config.describe_target())

    async def _catalog_ready(self) -> StreamCatalog:
        if self._catalog is None:
            client = await self.connect()
            self._js = client.jetstream(timeout=self.config.publish_timeout)
            self._catalog = StreamCatalog(client, self._js, self.config)
        return self._catalog

    async def _publisher_ready(self) -> NatsPublisher:
        if self._publisher is None:
            client = await self.connect()
            self._publisher = NatsPublisher(
                client,
                timeout=self.config.publish_timeout,
                retries=self.config.publish_retries,
                secrets=self.config.secrets,
                ensure_stream=self._ensure_again,
            )
        return self._publisher

    async def _ensure(self, topic: str) -> None:
        catalog = await self._catalog_ready()
        if await catalog.ensure(topic):
            self._topic_appeared()

    async def _ensure_again(self, topic: str, again: bool) -> None:
        catalog = await self._catalog_ready()
        if again:
            catalog.forget(topic)
        await self._ensure(topic)

    # --- transport primitives ----------------------------------------------------------------

    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """Publish every event and wait for the stream's acks (see ``publisher.py``)."""
        config = self.config
        outgoing = []
        for event, data in batch:
            replay = event.headers.get(REPLAY_ID) if event.headers else None
            msg_id = str(event.id) if replay is None else f"{event.id}:replay:{replay}"
            headers = {MSG_ID_HEADER: msg_id}
            if event.key is not None:
                headers[KEY_HEADER] = key_header_value(event.key)
            outgoing.append(Outgoing(event.topic, config.subject(event.topic), data, headers))
        with nats_errors("publish", config.secrets, publish=True):
            for topic in {item.topic for item in outgoing}:
                await self._ensure(topic)
            publisher = await self._publisher_ready()
        await publisher.send(outgoing)

    async def _send_raw(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Write one record as it is: ``headers`` as NATS headers (see ``records.py``)."""
        config = self.config
        item = Outgoing(topic, config.subject(topic), data, record_headers(key, headers))
        with nats_errors(f"write to {topic}", config.secrets, publish=True):
            await self._ensure(topic)
            publisher = await self._publisher_ready()
        await publisher.send([item])

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int:
        """``STREAM.MSG.DELETE`` of each stream sequence; how many the stream held."""
        self._check_open()
        catalog = await self._catalog_ready()
        stream = self.config.stream_name(topic)
        with nats_errors(f"delete messages of {stream}", self.config.secrets):
            return await delete_messages(catalog.js, stream, positions)

    async def _delete_all(self, topic: str) -> None:
        """``STREAM.PURGE``: the stream and its consumers stay."""
        self._check_open()
        catalog = await self._catalog_ready()
        stream = self.config.stream_name(topic)
        with nats_errors(f"purge {stream}", self.config.secrets):
            await delete_all(catalog.js, stream)

    async def _schedule(self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float) -> None:
        """Hold the events in the delayed stream until ``due`` (see ``delayed.py``)."""
        mover = await self._delay_mover()
        with nats_errors(f"delay events for {topic}", self.config.secrets, publish=True):
            await mover.prepare()
            publisher = await self._publisher_ready()
        await publisher.send(
            [delayed_message(self.config, topic, event, data, due) for event, data in batch]
        )

    async def _delay_mover(self) -> DelayMover:
        """The mover of due events, started by the first delay or subscription of this bus."""
        if self._mover is None:
            catalog = await self._catalog_ready()
            publisher = await self._publisher_ready()
            if self._mover is None:
                self._mover = DelayMover(
                    await self.connect(),
                    catalog,
                    publisher,
                    fetch_wait=self.config.fetch_wait,
                    report=functools.partial(self._report, "_delayed"),
                )
                self._mover.start()
        return self._mover

    async def _open_receiver(
        self, topic: str, group: str, *, private: bool, prefetch: int, from_beginning: bool = False
    ) -> Receiver:
        with nats_errors(f"subscribe to {topic}", self.config.secrets):
            await self._delay_mover()
            await self._ensure(topic)
        catalog = await self._catalog_ready()
        stream = self.config.stream_name(topic)
        consumer_config = self._consumer_config(group, private, prefetch, from_beginning)
        receiver = NatsReceiver(
            await self.connect(),
            topic=topic,
            stream=stream,
            private=private,
            ack_wait=self.config.ack_wait,
            fetch_wait=self.config.fetch_wait,
            secrets=self.config.secrets,
            open_consumer=functools.partial(catalog.ensure_consumer, stream, consumer_config),
            delete_consumer=functools.partial(catalog.delete_consumer, stream),
            report=functools.partial(self._report, topic),
        )
        await receiver.open()
        return receiver

    def _consumer_config(
        self, group: str, private: bool, prefetch: int, from_beginning: bool
    ) -> js_api.ConsumerConfig:
        config = self.config
        latest = private or config.new_group_start == "latest"
        start = (
            js_api.DeliverPolicy.NEW if latest and not from_beginning else js_api.DeliverPolicy.ALL
        )
        consumer = js_api.ConsumerConfig(
            deliver_policy=start,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_deliver=-1,  # retries and dead letters are the engine's
            max_ack_pending=max(config.max_ack_pending, prefetch),
            description=f"dotmac-events group {group!r}"[:200],
        )
        if private:
            consumer.inactive_threshold = PRIVATE_INACTIVE
            consumer.mem_storage = True
        else:
            consumer.durable_name = config.consumer_name(group)
        return consumer

    def _prefetch(self, concurrency: int) -> int:
        return max(self.config.prefetch_count, concurrency)

    async def _list_topics(self) -> list[str]:
        catalog = await self._catalog_ready()
        return await catalog.topics()

    def _read_log(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]:
        return self._read(topic, since=since, until=until, limit=limit, follow=follow)

    async def _read(
        self,
        topic: str,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int | None,
        follow: bool,
    ) -> AsyncGenerator[LogRecord | None, None]:
        catalog = await self._catalog_ready()
        records = read_stream(
            await self.connect(),
            catalog,
            topic,
            since=since,
            until=until,
            limit=limit,
            follow=follow,
            fetch_wait=self.config.fetch_wait,
        )
        try:
            async for record in records:
                yield record
        finally:
            await records.aclose()

    async def _drop_topic(self, topic: str) -> None:
        catalog = await self._catalog_ready()
        await catalog.delete_stream(topic)

    async def _close_transport(self) -> None:
        mover, self._mover = self._mover, None
        if mover is not None:
            try:
                await mover.stop()
            except Exception as exc:
                logger.warning("nats: stopping the delay mover failed: %r", exc)
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        if self._owns_client and self._client is not None:
            try:
                await self._client.drain()
            except Exception as exc:
                logger.warning("nats: closing the connection failed: %r", exc)
                try:
                    await self._client.close()
                except Exception as again:
                    logger.debug("nats: close after a failed drain: %r", again)

    # --- reporting ---------------------------------------------------------------------------

    def _report(self, topic: str, where: str, error: BaseException) -> None:
        logger.warning("nats bus, topic %s: %s failed: %s", topic, where, error)
        self.observer.error(topic, adapter=self.adapter, where=where, error=error)

    # --- inspection --------------------------------------------------------------------------

    async def health(self) -> HealthStatus:
        """Healthy when the server answers a JetStream account request (JetStream enabled)."""
        target = self.config.describe_target() if self._owns_client else "shared client"
        return await probe_health(
            self._ask_jetstream,
            adapter=self.adapter,
            closed=self.closed,
            details={"target": target},
            secrets=self.config.secrets,
        )

    async def _ask_jetstream(self, details: dict[str, Any]) -> None:
        catalog = await self._catalog_ready()
        account = await catalog.js.account_info()
        details["streams"] = account.streams
        if self._client is not None and self._client.connected_server_version:
            details["server_version"] = str(self._client.connected_server_version)

    async def stats(
        self, topic: str, group: str | None = None, *, dlq_topic: str | None = None
    ) -> BacklogStats:
        """The stream's message count, the group consumer's ``num_pending`` (lag) and
        ``num_ack_pending`` (pending), and the DLQ stream's count. ``oldest_pending_age`` is
        the age of the oldest unacked message since it was stored (the server keeps no time of
        first delivery, so this is an upper bound)."""
        self._check_open()
        catalog = await self._catalog_ready()
        js = catalog.js
        stream = self.config.stream_name(topic)
        dlq = self._stats_dlq_topic(topic, group, dlq_topic)
        try:
            length = await self._stream_length(js, stream)
            dlq_depth = await self._stream_length(js, self.config.stream_name(dlq))
            lag = pending = oldest = None
            if group is not None and length is not None:
                try:
                    info = await js.consumer_info(stream, self.config.consumer_name(group))
                except js_errors.NotFoundError:
                    info = None
                if info is not None:
                    lag, pending = info.num_pending, info.num_ack_pending
                    if pending and info.ack_floor is not None:
                        oldest = await self._age(js, stream, info.ack_floor.stream_seq + 1)
        except Exception as exc:
            raise translate(exc, doing=f"stats of {stream}", secrets=self.config.secrets) from exc
        return BacklogStats(
            topic=topic,
            group=group,
            length=length or 0,
            lag=lag,
            pending=pending,
            oldest_pending_age=oldest,
            dlq_depth=dlq_depth or 0,
        )

    @staticmethod
    async def _stream_length(js: JetStreamContext, stream: str) -> int | None:
        try:
            info = await js.stream_info(stream)
        except js_errors.NotFoundError:
            return None
        return int(info.state.messages or 0)

    @staticmethod
    async def _age(js: JetStreamContext, stream: str, sequence: int) -> float | None:
        try:
            msg = await js.get_msg(stream, sequence)
        except js_errors.NotFoundError:  # deleted by a limit: the next one is older than now
            return None
        if msg.time is None:
            return None
        return max(time.time() - msg.time.timestamp(), 0.0)


def create_nats_bus(
    config: NatsConfig | None = None,
    *,
    client: Client | None = None,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> NatsJetStreamBus:
    """Create a NATS JetStream bus; safe to call outside a running event loop.

    Raises:
        ConfigurationError: ``config`` or ``client`` is not of the expected type.
    """
    return NatsJetStreamBus(config, client=client, codec=codec, observer=observer)
