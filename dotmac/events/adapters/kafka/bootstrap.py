"""Starting an aiokafka client, with the cause when it cannot bootstrap over TLS.

aiokafka logs each bootstrap connection's error and raises a bare KafkaConnectionError
("Unable to bootstrap"), so a certificate the client does not trust reads like a broker that
is down: retriable, which it is not. When that happens over TLS, one handshake of our own with
the same context recovers the cause, and the error raised is the certificate's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, Protocol

from aiokafka.errors import KafkaConnectionError

from dotmac.events.adapters.kafka.errors import unless_cancelled
from dotmac.events.adapters.kafka_config import KafkaConfig

__all__ = ["certificate_refusal", "start_client"]

_PROBE_TIMEOUT = 5.0  # seconds: a server that does not finish a handshake by then is down


class _Startable(Protocol):
    async def start(self) -> Any: ...


async def start_client(client: _Startable, config: KafkaConfig) -> None:
    """``client.start()``; an untrusted certificate is raised as SSLCertVerificationError
    (from aiokafka's error), everything else as aiokafka raised it. A client that failed to
    start is stopped (``stop``, or ``close`` for the admin client): a half-started one holds
    connections and warns when collected."""
    try:
        await client.start()
    except BaseException as exc:
        release = getattr(client, "stop", None) or getattr(client, "close", None)
        if release is not None:
            with contextlib.suppress(Exception):  # a failed stop must not hide why start failed
                await unless_cancelled(release())
        if isinstance(exc, KafkaConnectionError):
            refusal = await certificate_refusal(config)
            if refusal is not None:
                raise refusal from exc
        raise


async def certificate_refusal(config: KafkaConfig) -> ssl.SSLCertVerificationError | None:
    """The verification error a TLS handshake with a bootstrap server gets, if any (None over
    plaintext, or when no server can be reached or every handshake succeeds). The servers are
    tried at once, each for at most ``_PROBE_TIMEOUT`` seconds."""
    context = config.tls_context()
    if context is None:
        return None
    outcomes = await asyncio.gather(
        *(_handshake(server, context, config) for server in config.bootstrap_list())
    )
    return next((refusal for refusal in outcomes if refusal is not None), None)


async def _handshake(
    server: str, context: ssl.SSLContext, config: KafkaConfig
) -> ssl.SSLCertVerificationError | None:
    host, _, port = server.rpartition(":")
    try:
        async with asyncio.timeout(min(config.request_timeout_ms / 1000, _PROBE_TIMEOUT)):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port), ssl=context)
    except ssl.SSLCertVerificationError as exc:
        return exc
    except (OSError, TimeoutError, ValueError):
        return None
    writer.transport.abort()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
