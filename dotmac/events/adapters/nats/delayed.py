"""Delayed events: held in an internal JetStream stream until due, then moved to their topic.

``publish(event, delay=...)`` stores the event in the stream ``<stream_prefix>__DELAYED``
(subject ``<subject_prefix>.$delayed.<topic>``) with a ``Dotmac-Due`` header (Unix time). Every
bus that delays or consumes runs a :class:`DelayMover` on the durable consumer ``mover`` of
that stream: a message not yet due is ``-NAK``'d with the remaining time as its delay, so the
server hands it back when due (the server's own timer: no polling, a few milliseconds late);
a due one is published to its topic and then acked. Everything is durable on the server: with
every process down, delayed events wait and move when a bus starts again.

The move publishes with ``Nats-Msg-Id`` = ``<event id>@<due>``, so a mover that died between
publish and ack, and the next mover that moves the same message again, store it once. The
same id covers a retried schedule. Server versions from 2.9 on are supported (no reliance on
2.11+ per-message TTLs or 2.12+ message schedules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api as js_api

from dotmac.events.adapters.nats.publisher import NatsPublisher, Outgoing
from dotmac.events.adapters.nats.pull import Puller
from dotmac.events.adapters.nats.records import KEY_HEADER, key_header_value
from dotmac.events.adapters.nats.streams import StreamCatalog
from dotmac.events.adapters.nats_config import NatsConfig
from dotmac.events.event import Event

__all__ = ["DUE_HEADER", "MOVER", "DelayMover", "delayed_message", "mover_config"]

logger = logging.getLogger("dotmac.events.nats")

DUE_HEADER = "Dotmac-Due"
"""Unix time (seconds, float) a delayed event is due."""

MOVER = "mover"
"""The durable consumer of the delayed stream that every bus's mover pulls from."""

MAX_HOLD = 3600.0
"""Longest single NAK delay; a later event is looked at again after this (harmless)."""

_BATCH = 256


def mover_config() -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=MOVER,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=-1,  # NAK'd messages wait as pending: no cap on how many may wait
    )


def delayed_message(
    config: NatsConfig, topic: str, event: Event, data: bytes, due: float
) -> Outgoing:
    """The message that holds ``event`` in the delayed stream until ``due``."""
    headers = {"Nats-Msg-Id": f"{event.id}@{due!r}", DUE_HEADER: repr(due)}
    if event.key is not None:
        headers[KEY_HEADER] = key_header_value(event.key)
    return Outgoing(topic, config.delayed_subject(topic), data, headers)


class DelayMover:
    """Moves due events from the delayed stream to their topics (one per bus)."""

    def __init__(
        self,
        client: Client,
        catalog: StreamCatalog,
        publisher: NatsPublisher,
        *,
        fetch_wait: float,
        report: Callable[[str, BaseException], None],
    ) -> None:
        self._client = client
        self._catalog = catalog
        self._config = catalog.config
        self._publisher = publisher
        self._fetch_wait = fetch_wait
        self._report = report
        self._queue: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._puller: Puller | None = None
        self._active: str | None = None

    async def prepare(self) -> None:
        """Create the delayed stream and the mover consumer if needed."""
        config = self._config
        await self._catalog.ensure_stream(
            "$delayed", config.delayed_stream, [config.delayed_subjects]
        )
        await self._catalog.ensure_consumer(config.delayed_stream, mover_config())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dotmac-nats-delay-mover")

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self._puller is None:
                    await self.prepare()
                    self._puller = Puller(
                        self._client,
                        self._config.delayed_stream,
                        MOVER,
                        on_message=self._on_message,
                        on_status=self._on_status,
                    )
                    await self._puller.start()
                await self._round()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    self._report("delay mover", exc)
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))

    def _on_message(self, msg: Msg) -> None:
        self._queue.append(msg)
        self._arrived.set()

    def _on_status(self, token: str, status: str, description: str) -> None:
        if token == self._active:
            self._active = None
            self._arrived.set()

    async def _round(self) -> None:
        assert self._puller is not None
        if not self._queue and self._active is None:
            self._arrived.clear()
            self._active = await self._puller.request(_BATCH, self._fetch_wait)
        if not self._queue:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._fetch_wait + 1.0):
                    await self._arrived.wait()
            self._arrived.clear()
            if not self._queue:
                self._active = None
                return
        batch = list(self._queue)
        self._queue.clear()
        await self._move(batch)

    async def _move(self, batch: Sequence[Msg]) -> None:
        now = time.time()
        due: list[tuple[Msg, Outgoing]] = []
        for msg in batch:
            headers = msg.headers or {}
            try:
                when = float(headers[DUE_HEADER])
            except (KeyError, ValueError):
                when = now  # not ours to hold: move it at once
            if when > now:
                delay = min(when - now, MAX_HOLD)
                await self._client.publish(msg.reply, b'-NAK {"delay": %d}' % int(delay * 1e9))
                continue
            target = self._target(msg)
            if target is None:
                logger.error("nats: delayed message on %s has no topic; dropped", msg.subject)
                await self._client.publish(msg.reply, b"+TERM")
                continue
            keep = {k: v for k, v in headers.items() if k in ("Nats-Msg-Id", KEY_HEADER)}
            due.append((msg, Outgoing(target, self._config.subject(target), msg.data, keep)))
        if not due:
            return
        for topic in {item.topic for _, item in due}:
            await self._catalog.ensure(topic)
        try:
            await self._publisher.send([item for _, item in due])
        except Exception as exc:
            self._report("delay mover", exc)
            for msg, _ in due:  # try again in a second; the Nats-Msg-Id keeps it single
                await self._client.publish(msg.reply, b'-NAK {"delay": 1000000000}')
            return
        for msg, _ in due:
            await self._client.publish(msg.reply, b"+ACK")

    def _target(self, msg: Msg) -> str | None:
        head = f"{self._config.subject_prefix}.$delayed."
        if not msg.subject.startswith(head):
            return None
        return self._config.topic_of(f"{self._config.subject_prefix}.{msg.subject[len(head) :]}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        puller, self._puller = self._puller, None
        if puller is not None:
            await puller.stop()
        for msg in self._queue:  # back to the server: the next mover takes them
            with contextlib.suppress(Exception):
                await self._client.publish(msg.reply, b"-NAK")
        self._queue.clear()
