"""Publishing to JetStream: a whole batch on the wire before waiting, then every ack.

Each message is published with a reply subject of its own on one shared inbox, so a batch
costs one round trip, not one per event, and keeps its order on the connection. A message
without an ack within ``publish_timeout`` (a lost connection, a slow server) is sent again,
``publish_retries`` times at most; its ``Nats-Msg-Id`` makes the stream store it once however
often it arrives within the stream's duplicate window. A 503 (no stream for the subject: it
was deleted) creates the stream again and resends.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dotmac.events.adapters.nats.pull import status_of
from dotmac.events.engine.health import scrub
from dotmac.events.errors import PublishError

__all__ = ["NatsPublisher", "Outgoing"]


@dataclass(slots=True)
class Outgoing:
    """One message to store: where, what, and the headers (``Nats-Msg-Id`` among them)."""

    topic: str
    subject: str
    data: bytes
    headers: dict[str, str]


class _NoStream(Exception):
    """The server had no stream for the subject (503)."""


class NatsPublisher:
    """Publishes :class:`Outgoing` batches and waits for the stream's acks."""

    def __init__(
        self,
        client: Client,
        *,
        timeout: float,
        retries: int,
        secrets: tuple[str, ...],
        ensure_stream: Callable[[str, bool], Awaitable[None]],
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._retries = retries
        self._secrets = secrets
        self._ensure_stream = ensure_stream  # (topic, again) -> None
        self._inbox = client.new_inbox()
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if self._sub is None:
                self._sub = await self._client.subscribe(f"{self._inbox}.*", cb=self._answered)

    async def _answered(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def send(self, batch: Sequence[Outgoing]) -> None:
        """Return once the stream acked every message of ``batch``.

        Raises:
            PublishError: the server refused a message, or no ack came after every retry.
        """
        if self._sub is None:
            await self._start()
        todo = list(batch)
        problem = "no ack"
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
            futures: list[asyncio.Future[Msg]] = []
            try:
                for item in todo:
                    futures.append(await self._publish(item))  # noqa: PERF401 - awaits in order
                await asyncio.wait(futures, timeout=self._timeout)
            except Exception as exc:  # closed or draining connection: nothing more will go out
                problem = f"{type(exc).__name__}: {exc}"
                self._drop(futures)
                raise PublishError(self._message(todo, problem)) from exc
            again: list[Outgoing] = []
            for item, future in zip(todo, futures, strict=False):
                if not future.done():
                    problem = f"no ack within {self._timeout}s"
                    again.append(item)
                    continue
                try:
                    self._check_ack(future.result())
                except _NoStream:
                    problem = "no stream for the subject"
                    await self._ensure_stream(item.topic, True)
                    again.append(item)
            self._drop(futures)
            if not again:
                return
            todo = again
        raise PublishError(self._message(todo, f"{problem} after {self._retries + 1} tries"))

    async def _publish(self, item: Outgoing) -> asyncio.Future[Msg]:
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        await self._client.publish(
            item.subject, item.data, reply=f"{self._inbox}.{token}", headers=item.headers
        )
        return future

    def _drop(self, futures: list[asyncio.Future[Msg]]) -> None:
        """Forget the acks of one attempt; one that still arrives is ignored."""
        for future in futures:
            future.cancel()
        self._waiting = {t: f for t, f in self._waiting.items() if not f.done()}

    def _check_ack(self, msg: Msg) -> None:
        status = status_of(msg)
        if status == "503":
            raise _NoStream
        if status is not None:
            raise PublishError(scrub(f"nats publish refused: status {status}", self._secrets))
        try:
            ack = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            raise PublishError(f"nats publish: unreadable ack {msg.data[:200]!r}") from None
        error = ack.get("error") if isinstance(ack, dict) else None
        if error:
            description = error.get("description", "") if isinstance(error, dict) else error
            raise PublishError(
                scrub(f"nats publish refused by the stream: {description}", self._secrets)
            )

    def _message(self, todo: Sequence[Outgoing], problem: str) -> str:
        topics = ", ".join(sorted({item.topic for item in todo})[:5])
        return scrub(
            f"nats publish of {len(todo)} event(s) to {topics} failed: {problem}", self._secrets
        )

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # a closed connection dropped it already
                pass
