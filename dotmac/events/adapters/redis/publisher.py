"""RedisPublisher: XADD with write coalescing, one pipeline in flight on one held connection.

A caller that finds nothing in flight sends its own XADDs at once, in its own task: the
uncontended path costs what an awaited XADD costs (no task, future or lock per event). Callers
arriving while a pipeline is in flight queue up, and all of them go out together in the next
pipeline as soon as the one in flight is answered (auto-pipelining, as ioredis's
``enableAutoPipelining``; no linger timer). A pipeline takes at most ``MAX_PIPELINE_ENTRIES``
entries and ``MAX_PIPELINE_BYTES`` bytes of commands (always at least one caller); the rest wait
for the next one. Queued callers are sent by a drain task the publisher owns while there is a
queue, so cancelling a caller never interrupts a pipeline that carries other callers' events.

Each caller returns when its own entries were accepted and raises its own error: replies are
mapped back to the entries that caused them, so an XADD refused by Redis (a key holding another
type) fails that caller alone.

Failures are split by what Redis may have seen. An entry that certainly did not leave (the
connection could not be opened) is sent again on a fresh connection with backoff, until the
caller's ``publish_timeout`` (or ``publish_retries``) runs out: a server restart costs a wait,
not an error. An entry that was written but got no reply (connection lost, or no answer within
``consumer_timeout``) is never resent: Redis cannot tell a resent XADD from a new one, so a
resend after a lost reply writes the event twice. Its caller gets
``PublishError(may_have_been_written=True)`` and decides.

The XADD commands are built here in RESP (a cached prefix per topic, then the codec's bytes)
and written on one pooled connection the publisher holds until it is closed. redis-py's
per-command path would add a pool checkout with a socket readiness probe and a task per write
(``asyncio.wait_for``); see :meth:`RedisPublisher._write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from dotmac.events.adapters.redis.errors import is_connection_error, is_retryable, translate
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.errors import EventBusError, PublishError
from dotmac.events.event import Event

__all__ = ["MAX_PIPELINE_BYTES", "MAX_PIPELINE_ENTRIES", "RedisPublisher"]

MAX_PIPELINE_ENTRIES = 1000
"""Most XADDs coalesced into one pipeline (a single ``publish_many`` may exceed it alone)."""

MAX_PIPELINE_BYTES = 4 * 1024 * 1024
"""Most bytes of commands coalesced into one pipeline (likewise)."""

_HEADS_CACHED = 1024  # topics whose XADD prefix is kept; the cache restarts when full
_IDLE = 0.05  # seconds without a round trip after which the loop may not have seen a close yet

Reply = Any  # an entry id, or the exception that stands for its reply


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


class NotSent(redis_errors.ConnectionError):
    """Stands for the reply of an entry that never left: the connection failed before it was
    written, so sending it again cannot write it twice."""


class _Entries:
    """One caller's entries and what is known of them."""

    __slots__ = ("commands", "count", "deadline", "written")

    def __init__(self, commands: list[bytes], deadline: float) -> None:
        self.commands = commands  # after a failed attempt: the ones still to send
        self.count = len(commands)
        self.deadline = deadline  # publish_timeout from the call
        self.written = False  # some entry may be in the stream (accepted, or reply lost)


class _Waiter(_Entries):
    """A caller queued behind the pipeline in flight."""

    __slots__ = ("future", "size")

    def __init__(
        self, commands: list[bytes], deadline: float, future: asyncio.Future[None]
    ) -> None:
        super().__init__(commands, deadline)
        self.future = future
        self.size = sum(len(command) for command in commands)


class RedisPublisher:
    """XADDs encoded events for one bus; see the module docstring for how calls coalesce.

    ``send`` raises :class:`~dotmac.events.errors.PublishError` (secrets scrubbed) for its own
    entries only. ``aclose`` waits for the pipeline in flight and gives the connection back.
    """

    def __init__(self, client: Redis, config: RedisConfig, *, backoff: ExponentialBackoff) -> None:
        self._pool = client.connection_pool
        options = self._pool.connection_kwargs  # how redis-py's own encoder encodes str
        self._encoding: str = options.get("encoding", "utf-8")
        self._encoding_errors: str = options.get("encoding_errors", "strict")
        self._config = config
        self._backoff = backoff
        self._heads: dict[str, tuple[bytes, bytes]] = {}
        self._conn: AbstractConnection | None = None
        self._last_reply = 0.0  # loop time the last round trip ended
        self._busy = False  # a pipeline is in flight, or callers are queued for the next one
        self._queue: deque[_Waiter] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None  # set by aclose() to wait for the turn

    # --- commands --------------------------------------------------------------------------

    def _heads_for(self, topic: str) -> tuple[bytes, bytes]:
        """``XADD stream [MAXLEN ~ n] * data`` in RESP: (for an event without key, with key)."""
        heads = self._heads.get(topic)
        if heads is None:
            stream = f"{self._config.key_prefix}{topic}".encode(
                self._encoding, self._encoding_errors
            )
            maxlen = self._config.max_stream_length
            trim = b"" if maxlen is None else b"$6\r\nMAXLEN\r\n$1\r\n~\r\n" + _bulk(b"%d" % maxlen)
            body = _bulk(b"XADD") + _bulk(stream) + trim + b"$1\r\n*\r\n$4\r\ndata\r\n"
            argc = 5 if maxlen is None else 8
            heads = (b"*%d\r\n%b" % (argc, body), b"*%d\r\n%b" % (argc + 2, body))
            if len(self._heads) >= _HEADS_CACHED:
                self._heads.clear()
            self._heads[topic] = heads
        return heads

    def _command(self, event: Event, data: bytes) -> bytes:
        plain, keyed = self._heads_for(event.topic)
        if event.key is None:
            return b"%b$%d\r\n%b\r\n" % (plain, len(data), data)
        key = event.key.encode(self._encoding, self._encoding_errors)
        return b"%b$%d\r\n%b\r\n$3\r\nkey\r\n$%d\r\n%b\r\n" % (
            keyed,
            len(data),
            data,
            len(key),
            key,
        )

    # --- the caller's side -----------------------------------------------------------------

    async def send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """XADD every event of ``batch``; return once Redis accepted all of them.

        Raises:
            PublishError: Redis refused one of the entries, the connection failed for longer
                than the retries allow, or no reply came in time. ``may_have_been_written``
                is False only when no entry of ``batch`` can be in the stream.
        """
        commands = [self._command(event, data) for event, data in batch]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.publish_timeout
        if self._busy:
            await self._wait_turn(_Waiter(commands, deadline, loop.create_future()))
            return
        self._busy = True
        try:
            await self._send_alone(_Entries(commands, deadline))
        finally:
            self._end_turn()

    async def _send_alone(self, waiter: _Entries) -> None:
        """Nothing was in flight: send the caller's own commands from the caller's task."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            replies = await self._round_trip(waiter.commands, waiter.deadline - loop.time())
            outcome = self._outcome(waiter, replies, attempt)
            if outcome is True:
                return
            if isinstance(outcome, EventBusError):
                raise outcome
            delay = self._backoff.delay(attempt)
            if loop.time() + delay >= waiter.deadline:
                raise self._out_of_time(waiter, replies, attempt)
            await asyncio.sleep(delay)

    async def _wait_turn(self, waiter: _Waiter) -> None:
        self._queue.append(waiter)
        future = waiter.future
        try:
            await future
        except asyncio.CancelledError:
            # Cancelled after its outcome was set: nobody else will look at it.
            if future.done() and not future.cancelled():
                future.exception()
            raise

    def _end_turn(self) -> None:
        """The caller that held the turn is done: hand queued callers to the drain task."""
        if any(not waiter.future.done() for waiter in self._queue):
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._queue.clear()
            self._become_idle()

    def _become_idle(self) -> None:
        self._busy = False
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    # --- the drain task: pipelines for queued callers ----------------------------------------

    async def _drain(self) -> None:
        batch: list[_Waiter] = []
        try:
            while True:
                batch = self._take()
                if not batch:
                    break
                await self._send_for(batch)
                # Callers just answered run before the next pipeline is taken, so the ones
                # that publish again at once ride it instead of waiting a round trip more.
                await asyncio.sleep(0)
        finally:
            self._drainer = None
            for waiter in (*batch, *self._queue):  # only when cancelled (loop shutdown) or a bug
                if not waiter.future.done():
                    waiter.future.set_exception(PublishError("redis: the publisher stopped"))
                    waiter.future.exception()  # its caller may be gone; never log it
            self._queue.clear()
            self._become_idle()

    def _take(self) -> list[_Waiter]:
        """Queued callers for the next pipeline, oldest first, within the bounds."""
        batch: list[_Waiter] = []
        entries = size = 0
        queue = self._queue
        while queue:
            waiter = queue[0]
            if waiter.future.done():  # cancelled while queued: not sent
                queue.popleft()
                continue
            entries += len(waiter.commands)
            size += waiter.size
            if batch and (entries > MAX_PIPELINE_ENTRIES or size > MAX_PIPELINE_BYTES):
                break
            batch.append(queue.popleft())
        return batch

    async def _send_for(self, batch: list[_Waiter]) -> None:
        """One pipeline for ``batch``; each caller gets its outcome as soon as it is known."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while batch:
            attempt += 1
            commands = [command for waiter in batch for command in waiter.commands]
            limit = min(waiter.deadline for waiter in batch) - loop.time()
            replies = await self._round_trip(commands, limit)
            retry: list[_Waiter] = []
            start = 0
            for waiter in batch:
                end = start + len(waiter.commands)
                outcome = self._outcome(waiter, replies[start:end], attempt)
                start = end
                if outcome is None:
                    retry.append(waiter)
                elif not waiter.future.done():
                    if isinstance(outcome, BaseException):
                        waiter.future.set_exception(outcome)
                    else:
                        waiter.future.set_result(None)
            batch = [waiter for waiter in retry if not waiter.future.done()]
            if batch:
                delay = self._backoff.delay(attempt)
                late = [w for w in batch if loop.time() + delay >= w.deadline]
                for waiter in late:  # out of time before the next try: fail them now
                    waiter.future.set_exception(self._out_of_time(waiter, replies, attempt))
                batch = [waiter for waiter in batch if not waiter.future.done()]
                if batch:
                    await asyncio.sleep(delay)

    def _outcome(
        self, waiter: _Entries, replies: list[Reply], attempt: int
    ) -> EventBusError | bool | None:
        """True: all accepted; an error: the caller's; None: resend the entries not sent."""
        unsent: list[bytes] = []
        failure: BaseException | None = None
        for command, reply in zip(waiter.commands, replies, strict=True):
            if isinstance(reply, NotSent):
                if is_retryable(reply):
                    unsent.append(command)
                else:  # refused credentials, a host that does not resolve, untrusted TLS
                    failure = failure or reply
            elif isinstance(reply, Exception):
                failure = failure or reply
                if is_connection_error(reply):
                    waiter.written = True  # written, no reply: it may be in the stream
            else:
                waiter.written = True
        if failure is None and unsent:
            retries = self._config.publish_retries
            if retries is not None and attempt > retries:
                failure = NotSent(f"connection failed {attempt} time(s): {replies[-1]}")
                failure.__cause__ = replies[-1]  # what failed, for the error's kind
        if failure is not None:
            error = self._error(failure, waiter, attempt)
            error.__cause__ = failure
            return error
        if not unsent:
            return True
        waiter.commands = unsent
        return None

    def _out_of_time(self, waiter: _Entries, replies: list[Reply], attempt: int) -> EventBusError:
        """The caller's error when ``publish_timeout`` ends before its entries could be sent."""
        cause = NotSent(f"no connection within publish_timeout: {replies[-1]}")
        error = self._error(cause, waiter, attempt)
        error.__cause__ = replies[-1]
        return error

    def _error(self, exc: BaseException, waiter: _Entries, attempt: int) -> EventBusError:
        """The caller's PublishError, secrets scrubbed; raise or set it ``from exc``."""
        written = waiter.written
        error = translate(
            exc,
            doing=f"publish of {waiter.count} event(s) after {attempt} attempt(s)",
            secrets=self._config.secrets,
            publish=True,
        )
        if isinstance(error, PublishError):
            error.may_have_been_written = written
        return error

    # --- the wire ----------------------------------------------------------------------------

    async def _round_trip(self, commands: list[bytes], limit: float) -> list[Reply]:
        """Write ``commands``, read one reply each, all within ``limit`` seconds (and at most
        ``consumer_timeout``). An error reply stands for its entry; a failed connection stands
        for every entry it left unanswered, as :class:`NotSent` when nothing was written yet.
        Never raises Exception."""
        replies: list[Reply] = []
        written = False
        try:
            if limit <= 0:
                raise TimeoutError("publish_timeout passed before the entries were sent")
            conn = self._conn
            loop = asyncio.get_running_loop()
            if loop.time() - self._last_reply > _IDLE:
                # An idle connection the server closed (a restart) looks open until the loop
                # reads the close: let it read, so a stale connection is reopened before any
                # command is written to it, instead of failing that command as maybe-written.
                await asyncio.sleep(0)
            async with asyncio.timeout(min(limit, self._config.consumer_timeout)):
                if conn is None:
                    conn = self._conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                await self._connect(conn)
                written = True  # from here on Redis may have read some of the commands
                await self._write(conn, commands)
                for _ in commands:
                    try:
                        replies.append(
                            await conn.read_response(timeout=math.inf, disconnect_on_error=False)
                        )
                    except redis_errors.ResponseError as exc:
                        replies.append(exc)
                    except redis_errors.BusyLoadingError as exc:  # refused while loading
                        replies.append(NotSent(f"redis is loading its data: {exc}"))
        except TimeoutError as exc:
            error = redis_errors.TimeoutError(f"no reply from redis in time: {exc!r}")
            await self._drop_connection()
            self._fill(replies, len(commands), error, written)
        except Exception as exc:
            await self._drop_connection()
            self._fill(replies, len(commands), exc, written)
        except BaseException:  # cancelled mid-exchange: replies may still be on their way
            await self._drop_connection()
            raise
        self._last_reply = asyncio.get_running_loop().time()
        return replies

    @staticmethod
    def _fill(replies: list[Reply], count: int, error: Exception, written: bool) -> None:
        """Stand ``error`` for every entry without a reply (NotSent if none was written)."""
        if not written:
            cause = error
            error = NotSent(f"{type(error).__name__}: {error}")
            error.__cause__ = cause
        replies.extend([error] * (count - len(replies)))

    @staticmethod
    async def _connect(conn: AbstractConnection) -> None:
        """(Re)open ``conn`` when it is closed or the server closed it (idle timeout, restart):
        a fresh socket each time, and no retry spent, as redis-py's pool does on checkout."""
        reader = getattr(conn, "_reader", None)
        writer = getattr(conn, "_writer", None)
        if reader is None or writer is None:
            await conn.connect()  # type: ignore[no-untyped-call]
        elif (
            isinstance(reader, asyncio.StreamReader)
            and isinstance(writer, asyncio.StreamWriter)
            and (reader.at_eof() or reader.exception() is not None or writer.is_closing())
        ):
            await conn.disconnect(nowait=True)
            await conn.connect()  # type: ignore[no-untyped-call]

    async def _write(self, conn: AbstractConnection, commands: list[bytes]) -> None:
        """Write on the open ``conn``.

        redis-py's ``send_packed_command`` wraps every write in ``asyncio.wait_for`` (a task per
        call) and its pool probes the socket with a zero-timeout read per checkout. A write to
        a socket with room in its buffer never blocks, so write to the connection's stream
        directly and wait only when the transport asks for it (a full buffer; the caller's
        timeout bounds that). The streams are redis-py's private ``_reader``/``_writer``:
        without them (a redis-py that renamed them) the public, slower path is used, so a
        rename costs speed, not publishes.
        """
        writer = getattr(conn, "_writer", None)
        if not isinstance(writer, asyncio.StreamWriter):
            await conn.send_packed_command(commands, check_health=False)
            return
        writer.writelines(commands)
        if writer.transport.get_write_buffer_size():
            try:
                await writer.drain()
            except OSError as exc:
                raise redis_errors.ConnectionError(f"error writing to redis: {exc!r}") from exc

    async def _drop_connection(self) -> None:
        """Close the held connection (its state is unknown); the next write reconnects."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # thrown away; the next connect reports
                await conn.disconnect(nowait=True)

    # --- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait for the pipeline in flight and the callers queued behind it, then give the
        connection back to the pool. Call it once nothing publishes any more."""
        if self._busy:
            idle = self._idle
            if idle is None:
                idle = self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(idle)
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)
