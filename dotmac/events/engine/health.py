"""A health report made the same way for every transport, and the secret scrubbing it uses.

``EventBus.health`` never raises: a closed bus is unhealthy without asking the broker, a probe
that raises is unhealthy with its error in the details, and the latency is the probe's round
trip. Only the probe is the transport's own. Error text may quote a URL or a server's reply
holding a password, so it goes through :func:`scrub` first, as the adapters' error
translation does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from dotmac.events.bus import HealthStatus

__all__ = ["Probe", "probe_health", "scrub"]

Probe = Callable[[dict[str, Any]], Awaitable[None]]
"""A health check's round trip to the broker; it may add what it learns to the details."""


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def probe_health(
    probe: Probe,
    *,
    adapter: str,
    closed: bool,
    details: dict[str, Any],
    secrets: tuple[str, ...],
) -> HealthStatus:
    """Healthy when ``probe`` returns, with its latency; ``details`` (filled in by the probe)
    gain the scrubbed error when it raises, or ``"bus is closed"`` when ``closed`` (the probe
    is then not called)."""
    if closed:
        return HealthStatus(
            healthy=False,
            adapter=adapter,
            latency_ms=0.0,
            details={**details, "error": "bus is closed"},
        )
    started = time.perf_counter()
    try:
        await probe(details)
    except Exception as exc:  # CancelledError is a BaseException and passes through
        details["error"] = scrub(f"{type(exc).__name__}: {exc}", secrets)
        healthy = False
    else:
        healthy = True
    latency = (time.perf_counter() - started) * 1000
    return HealthStatus(healthy=healthy, adapter=adapter, latency_ms=latency, details=details)
