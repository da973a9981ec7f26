"""Pull requests to one JetStream consumer, answered on an inbox of our own.

nats-py's ``fetch`` hides which request a status answers, leaves requests lingering on the
server after it returns, and cannot be interrupted. Here each request has its own reply subject
(``inbox.<n>``), so a status (404/408/409) names the request it ends. Messages keep their own
subject, so they tell only which Puller (inbox) they came to: an owner with one request open at
a time counts them against it. Closing drains the inbox: the server stops
sending (UNSUB, then a round trip), and whatever it sent before still reaches the owner, who
gives it back, so no message vanishes into an unsubscribed inbox until ``ack_wait`` runs out.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import cast

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["API_PREFIX", "Puller", "ack_subject_parts", "status_of"]

logger = logging.getLogger("dotmac.events.nats")

API_PREFIX = "$JS.API"

NO_MESSAGES = "404"
REQUEST_TIMEOUT = "408"
CONFLICT = "409"  # consumer deleted, too many waiting requests, leadership change...
HEARTBEAT = "100"


def status_of(msg: Msg) -> str | None:
    """The status code of a status message (no payload, a ``Status`` header), else None."""
    headers = msg.headers
    if headers is None or msg.data:
        return None
    return headers.get("Status")


def ack_subject_parts(reply: str) -> tuple[int, int]:
    """``(delivery count, stream sequence)`` from a JetStream ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (v1) or with
    ``<domain>.<account hash>`` after ``ACK`` and a random token at the end (v2).
    """
    parts = reply.split(".")
    if len(parts) == 9:
        return int(parts[4]), int(parts[5])
    return int(parts[6]), int(parts[7])


class Puller:
    """Sends pull requests for ``stream``/``consumer``; hands every message to ``on_message``
    and every status to ``on_status`` (request token, code, description)."""

    def __init__(
        self,
        client: Client,
        stream: str,
        consumer: str,
        *,
        on_message: Callable[[Msg], None],
        on_status: Callable[[str, str, str], None],
    ) -> None:
        self._client = client
        self.stream = stream
        self.consumer = consumer
        self._on_message = on_message
        self._on_status = on_status
        self._inbox = client.new_inbox()
        self._tokens = itertools.count(1)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._client.subscribe(f"{self._inbox}.*", cb=self._received)

    async def _received(self, msg: Msg) -> None:
        status = status_of(msg)
        if status is None:
            self._on_message(msg)
        elif status != HEARTBEAT:
            description = (msg.headers or {}).get("Description", "")
            self._on_status(msg.subject.rpartition(".")[2], status, description)

    async def request(self, batch: int, expires: float | None, *, no_wait: bool = False) -> str:
        """Ask for up to ``batch`` messages within ``expires`` seconds; returns the token."""
        token = str(next(self._tokens))
        body: dict[str, object] = {"batch": batch}
        if expires is not None:
            body["expires"] = int(expires * 1e9)
        if no_wait:
            body["no_wait"] = True
        await self._client.publish(
            f"{API_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}",
            orjson.dumps(body),
            reply=f"{self._inbox}.{token}",
        )
        return token

    async def stop(self) -> None:
        """Stop receiving; answers already on their way are still handed over first."""
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            if self._client.is_connected:
                drain = cast(Callable[[], Awaitable[None]], sub.drain)  # untyped in nats-py
                await drain()
            else:
                await sub.unsubscribe()
        except Exception as exc:  # a closed connection: the server forgets the inbox anyway
            logger.debug("nats: stopping pulls from %s/%s: %r", self.stream, self.consumer, exc)
