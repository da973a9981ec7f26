"""Reading a topic's stream back (the NATS bus's ``_read_log``): no group, no acks.

A read creates an ephemeral consumer of its own (``AckNone``, in memory, starting where
``since`` says) and pulls from it; no durable consumer moves. The consumer is deleted when
the read ends (or by the server a while after a reader that died). A position is the stream
sequence as a string. Without ``follow`` the read ends at the last message stored when it
began; with it, every idle pull of about ``fetch_wait`` seconds yields None.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js import errors as js_errors

from dotmac.events.adapters.nats.errors import nats_errors
from dotmac.events.adapters.nats.pull import NO_MESSAGES, Puller
from dotmac.events.adapters.nats.receiver import delivery_of
from dotmac.events.adapters.nats.streams import StreamCatalog
from dotmac.events.errors import ConfigurationError
from dotmac.events.transport import LogRecord

__all__ = ["read_stream"]

_PAGE = 256
_READER_INACTIVE = 30.0  # seconds the server keeps a dead reader's consumer
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sequence(name: str, position: str) -> int:
    if not (position.isascii() and position.isdigit()):
        raise ConfigurationError(name, f"{position!r} is not a stream sequence (e.g. '12')")
    return int(position)


def _consumer_config(since: datetime | str | None) -> js_api.ConsumerConfig:
    config = js_api.ConsumerConfig(
        ack_policy=js_api.AckPolicy.NONE,
        mem_storage=True,
        inactive_threshold=_READER_INACTIVE,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    if isinstance(since, datetime):
        config.deliver_policy = js_api.DeliverPolicy.BY_START_TIME
        config.opt_start_time = since.astimezone(UTC)
    elif since == "end":
        config.deliver_policy = js_api.DeliverPolicy.NEW
    elif since is not None:
        config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = _sequence("since", since) + 1
    return config


def _stored_at(reply: str) -> datetime:
    """When the server stored the message, from its ack subject's nanoseconds, rounded down to
    the microsecond: nats-py's ``metadata.timestamp`` goes through a float and may round up,
    past the time a ``since=`` read of that very message then starts at."""
    parts = reply.split(".")
    nanoseconds = int(parts[7] if len(parts) == 9 else parts[9])
    return _EPOCH + timedelta(microseconds=nanoseconds // 1000)


def _record(msg: Msg) -> LogRecord:
    delivery = delivery_of(msg)
    return LogRecord(
        delivery.message_id,
        msg.data,
        timestamp=_stored_at(msg.reply),
        key=delivery.key,
        headers=delivery.headers,
        offset=delivery.offset,
    )


async def _drained(catalog: StreamCatalog, stream: str, consumer: str) -> bool:
    """Whether the read's consumer has nothing left to deliver. A pull that ends without "no
    messages" while the read has not reached the stream's last sequence means that message is
    gone (deleted; ``last_seq`` stays put), or that the pull's end was lost."""
    with nats_errors(f"read {stream}", catalog.config.secrets):
        info = await catalog.js.consumer_info(stream, consumer)
    return not info.num_pending


async def read_stream(
    client: Client,
    catalog: StreamCatalog,
    topic: str,
    *,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int | None,
    follow: bool,
    fetch_wait: float,
) -> AsyncGenerator[LogRecord | None, None]:
    """Records of ``topic``'s stream in order (see the module docstring)."""
    config = catalog.config
    secrets = config.secrets
    consumer_config = _consumer_config(since)
    last_wanted = _sequence("until", until) if isinstance(until, str) else None
    stream = config.stream_name(topic)
    if follow:
        await catalog.ensure(topic)
    with nats_errors(f"read {stream}", secrets):
        try:
            info = await catalog.js.stream_info(stream)
        except js_errors.NotFoundError:
            return
    end = info.state.last_seq
    if not follow and (end == 0 or (info.state.messages or 0) == 0):
        return
    answers: asyncio.Queue[tuple[str, Msg | None]] = asyncio.Queue()
    with nats_errors(f"read {stream}", secrets):
        name = await catalog.ensure_consumer(stream, consumer_config)
    puller = Puller(
        client,
        stream,
        name,
        on_message=lambda msg: answers.put_nowait(("", msg)),
        on_status=lambda token, status, _: answers.put_nowait((status, None)),
    )
    try:
        with nats_errors(f"read {stream}", secrets):
            await puller.start()
        while True:
            page = min(limit or _PAGE, _PAGE)
            with nats_errors(f"read {stream}", secrets):
                await puller.request(page, fetch_wait, no_wait=not follow)
            got = 0
            while True:
                try:
                    async with asyncio.timeout(fetch_wait + 2.0):
                        status, msg = await answers.get()
                except TimeoutError:
                    status, msg = "408", None  # the request's end was lost (a reconnect)
                if msg is None:
                    if not follow and (
                        status == NO_MESSAGES or await _drained(catalog, stream, name)
                    ):
                        return
                    break
                record = _record(msg)
                sequence = record.offset or 0
                if last_wanted is not None and sequence > last_wanted:
                    return
                if not follow and sequence > end:
                    return
                if isinstance(until, datetime) and record.timestamp and record.timestamp >= until:
                    return
                yield record
                got += 1
                if not follow and sequence >= end:
                    return
                if got >= page:
                    break
            if follow and got == 0:
                yield None
    finally:
        with contextlib.suppress(Exception):
            await puller.stop()
            await catalog.delete_consumer(stream, name)
