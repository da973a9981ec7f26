"""The JetStream consumer of one subscription: pull requests, acks, progress reports, redelivery.

A named group is a durable pull consumer shared by every process of the group: the server
hands each message to one pull request, so consumers compete within a group and every group
gets every message. A private subscription has an ephemeral consumer of its own (deleted at
close, or by the server after :data:`PRIVATE_INACTIVE` seconds without us).

Delivery counts are the server's (``num_delivered`` in the ack subject), so a message taken
over from a dead process carries on with its true count. While we hold a message (in a
handler, or waiting out a retry's backoff) we send ``+WPI`` every ``ack_wait / 3``, so only
a dead process's messages are handed to another consumer after ``ack_wait``.

A failed message is redelivered through the server: ``-NAK`` puts it first in the consumer's
redelivery queue, and a one-message pull takes it back with its count raised. If another
consumer of the group took it meanwhile, ``redeliver`` says so (None), as the contract allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import unquote

from nats.aio.client import Client
from nats.aio.msg import Msg

from dotmac.events.adapters.nats.errors import translate
from dotmac.events.adapters.nats.pull import CONFLICT, Puller, ack_subject_parts
from dotmac.events.adapters.nats.records import KEY_HEADER, transport_headers
from dotmac.events.transport import Delivery

__all__ = ["PRIVATE_INACTIVE", "NatsReceiver", "delivery_of"]

logger = logging.getLogger("dotmac.events.nats")

PRIVATE_INACTIVE = 120.0
"""Seconds the server keeps a private subscription's consumer after its last pull."""

_ACK = b"+ACK"
_NAK = b"-NAK"
_PROGRESS = b"+WPI"


class _Held:
    """A message we hold: where its ack goes, and when we last reported progress on it."""

    __slots__ = ("reply", "touched")

    def __init__(self, reply: str, touched: float) -> None:
        self.reply = reply
        self.touched = touched


def delivery_of(msg: Msg) -> Delivery:
    """The engine's view of a JetStream message; the token is its ack subject, the headers
    its transport headers (``records.py``)."""
    count, sequence = ack_subject_parts(msg.reply)
    headers = msg.headers
    if not headers:
        return Delivery(msg.data, count, str(sequence), None, offset=sequence, token=msg.reply)
    key = headers.get(KEY_HEADER)
    if key is not None and "%" in key:
        key = unquote(key)
    return Delivery(
        msg.data,
        count,
        str(sequence),
        key,
        offset=sequence,
        token=msg.reply,
        headers=transport_headers(headers),
    )


class NatsReceiver:
    """The Receiver (see dotmac.events.transport) of one consumer of one topic stream.

    ``open_consumer()`` (re)creates the consumer and returns its name; ``report(where, error)``
    tells the bus's observer about failures outside a handler; ``on_close`` runs after close.
    """

    def __init__(
        self,
        client: Client,
        *,
        topic: str,
        stream: str,
        private: bool,
        ack_wait: float,
        fetch_wait: float,
        secrets: tuple[str, ...],
        open_consumer: Callable[[], Awaitable[str]],
        delete_consumer: Callable[[str], Awaitable[None]],
        report: Callable[[str, BaseException], None],
    ) -> None:
        self._client = client
        self.topic = topic
        self.stream = stream
        self.consumer = ""
        self._private = private
        self._fetch_wait = fetch_wait
        self._progress_every = ack_wait / 3
        self._secrets = secrets
        self._open_consumer = open_consumer
        self._delete_consumer = delete_consumer
        self._report = report
        self._puller: Puller | None = None
        self._retaker: Puller | None = None  # one-message pulls that take a NAK'd one back
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._active: str | None = None  # token of the fetch request still open
        self._active_left = 0
        self._active_until = 0.0
        self._held: dict[str, _Held] = {}  # message id -> ack subject and last touch
        self._awaiting: dict[int, asyncio.Future[Msg]] = {}  # seq -> a redelivery we wait for
        self._gone = False
        self._interrupted = False
        self._failures = 0
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create (or bind to) the consumer, start taking answers and reporting progress."""
        try:
            self.consumer = await self._open_consumer()
            self._puller = Puller(
                self._client,
                self.stream,
                self.consumer,
                on_message=self._on_message,
                on_status=self._on_status,
            )
            self._retaker = Puller(
                self._client,
                self.stream,
                self.consumer,
                on_message=self._on_retaken,
                on_status=lambda token, status, description: None,
            )
            await self._puller.start()
            await self._retaker.start()
        except Exception as exc:
            raise self._error(exc, "open consumer") from exc
        self._heartbeat = asyncio.create_task(
            self._progress_loop(), name=f"dotmac-nats-progress-{self.stream}"
        )

    def interrupt(self) -> None:
        self._interrupted = True
        self._arrived.set()

    async def close(self) -> None:
        """Stop pulling, give back what came but was never handed out, drop a private consumer."""
        self._interrupted = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        try:
            for puller in (self._puller, self._retaker):
                if puller is not None:
                    await puller.stop()
            for waiter in self._awaiting.values():
                waiter.cancel()
            while self._buffer:
                msg = self._buffer.popleft()
                self._held.pop(str(ack_subject_parts(msg.reply)[1]), None)
                await self._client.publish(msg.reply, _NAK)
            if self._client.is_connected:
                await self._client.flush(timeout=5)
            if self._private and self.consumer:
                await self._delete_consumer(self.consumer)
        except Exception as exc:  # the server redelivers what we could not give back
            self._report("close", self._error(exc, "close"))

    # --- answers to pull requests ----------------------------------------------------------

    def _on_message(self, msg: Msg) -> None:
        if self._active is not None:
            self._active_left -= 1
            if self._active_left <= 0:
                self._active = None
        self._take(msg)

    def _on_retaken(self, msg: Msg) -> None:
        self._take(msg)

    def _take(self, msg: Msg) -> None:
        """A message for us: the one a redelivery waits for, or one for the next fetch."""
        try:
            _, sequence = ack_subject_parts(msg.reply)
        except (ValueError, IndexError, AttributeError):
            logger.warning("nats %s: a message without an ack subject: %r", self.stream, msg)
            return
        waiter = self._awaiting.pop(sequence, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)
            return
        self._held[str(sequence)] = _Held(msg.reply, time.monotonic())
        self._buffer.append(msg)
        self._arrived.set()

    def _on_status(self, token: str, status: str, description: str) -> None:
        if token == self._active:
            self._active = None
            self._arrived.set()
        if status == CONFLICT and "deleted" in description.lower():
            self._gone = True
            self._arrived.set()

    # --- fetching --------------------------------------------------------------------------

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        try:
            if acks:
                await self.ack(acks)
            if self._interrupted:
                return []
            if self._gone:
                await self._reopen()
            if not self._buffer:
                await self._pull(max_count)
        except Exception as exc:
            self._failures += 1
            error = self._error(exc, "fetch")
            if self._failures == 1:
                self._report("connection", error)
            await asyncio.sleep(min(0.1 * 2**self._failures, 5.0))
            if acks:
                raise error from exc  # the engine keeps the acks for the next fetch
            return []
        self._failures = 0
        buffer, taken = self._buffer, list[Delivery]()
        while buffer and len(taken) < max_count:
            taken.append(delivery_of(buffer.popleft()))
        return taken

    async def _pull(self, max_count: int) -> None:
        """Ask for up to ``max_count`` (one request open at a time) and wait for an answer."""
        now = time.monotonic()
        if self._active is not None and now > self._active_until:
            self._active = None  # its end never reached us (a reconnect lost it)
        if self._active is None:
            assert self._puller is not None
            self._arrived.clear()
            self._active = await self._puller.request(max_count, self._fetch_wait)
            self._active_left = max_count
            self._active_until = now + self._fetch_wait + 1.0
        else:
            self._arrived.clear()
        if self._buffer or self._interrupted:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._fetch_wait + 0.5):
                await self._arrived.wait()

    async def _reopen(self) -> None:
        """The consumer was deleted under us (an operator, or an idle private one expired)."""
        logger.warning(
            "nats stream %s: consumer %s is gone; creating it again", self.stream, self.consumer
        )
        self._gone = False
        self._active = None
        self.consumer = await self._open_consumer()
        for puller in (self._puller, self._retaker):
            if puller is not None:
                puller.consumer = self.consumer

    # --- outcomes --------------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        held, publish = self._held, self._client.publish
        try:
            for delivery in deliveries:
                held.pop(delivery.message_id, None)
                await publish(delivery.token, _ACK)
        except Exception as exc:
            raise self._error(exc, "ack") from exc

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        """``-NAK`` the message and take it back with a one-message pull (count raised)."""
        if self._held.pop(delivery.message_id, None) is None or self._retaker is None:
            return None
        sequence = int(delivery.message_id)
        waiter: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._awaiting[sequence] = waiter
        try:
            await self._client.publish(delivery.token, _NAK)
            await self._retaker.request(1, self._fetch_wait)
            async with asyncio.timeout(self._fetch_wait + 0.5):
                msg = await waiter
        except TimeoutError:
            return None  # another consumer of the group has it now
        except Exception as exc:
            raise self._error(exc, "redeliver") from exc
        finally:
            self._awaiting.pop(sequence, None)
        self._held[delivery.message_id] = _Held(msg.reply, time.monotonic())
        return delivery_of(msg)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """``-NAK`` them: the server hands them to the next pull of the group at once."""
        try:
            for delivery in deliveries:
                if self._held.pop(delivery.message_id, None) is not None:
                    await self._client.publish(delivery.token, _NAK)
        except Exception as exc:  # they come back after ack_wait all the same
            self._report("release", self._error(exc, "release"))

    # --- background ------------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self._progress_every / 2)
            try:
                await self._report_progress()
            except Exception as exc:  # the connection is down: the fetch path reports it
                logger.debug("nats stream %s: progress report failed: %r", self.stream, exc)

    async def _report_progress(self) -> None:
        """``+WPI`` for every message held longer than ``ack_wait / 3`` since its last one."""
        now = time.monotonic()
        for held in list(self._held.values()):
            if now - held.touched >= self._progress_every:
                held.touched = now
                await self._client.publish(held.reply, _PROGRESS)

    def _error(self, exc: BaseException, doing: str) -> Exception:
        return translate(
            exc, doing=f"{doing} on {self.stream} (consumer {self.consumer})", secrets=self._secrets
        )
