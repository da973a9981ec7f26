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

from dotmac.events.adapters.kafka_config import KafkaConfig

__all__ = ["certificate_refusal", "start_client"]


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
            with contextlib.suppress(Exception):
                await release()
        if isinstance(exc, KafkaConnectionError):
            refusal = await certificate_refusal(config)
            if refusal is not None:
                raise refusal from exc
        raise


async def certificate_refusal(config: KafkaConfig) -> ssl.SSLCertVerificationError | None:
    """The verification error a TLS handshake with a bootstrap server gets, if any (None over
    plaintext, or when no server can be reached or every handshake succeeds)."""
    context = config.tls_context()
    if context is None:
        return None
    for server in config.bootstrap_list():
        host, _, port = server.rpartition(":")
        try:
            async with asyncio.timeout(config.request_timeout_ms / 1000):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port), ssl=context)
        except ssl.SSLCertVerificationError as exc:
            return exc
        except (OSError, TimeoutError, ValueError):
            continue
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return None
