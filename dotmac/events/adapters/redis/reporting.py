"""What a Redis bus (single server or cluster) tells operators about itself.

Failures outside a handler (a lost connection, a delay mover pass, a close) reach the log and
the bus's observer; pending entries trimmed from a stream before they were handled are a loss of
data, so they are also counted, and the count shows in every health report. Both Redis buses
report through one :class:`Reporter`, so their log lines and health details read the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dotmac.events.bus import HealthStatus
from dotmac.events.engine.health import Probe, probe_health
from dotmac.events.errors import TransportError
from dotmac.events.observability.observer import Observer

__all__ = ["Reporter"]


@dataclass(slots=True, kw_only=True)
class Reporter:
    """Reports of one bus; ``label`` ("redis", "redis cluster") starts its log lines, ``target``
    (where the bus connects, safe to show) and the scrubbed errors go into health details."""

    observer: Observer
    adapter: str
    logger: logging.Logger
    label: str
    target: str
    secrets: tuple[str, ...] = field(repr=False)
    lost_to_trimming: int = 0

    def failure(self, topic: str, where: str, error: BaseException) -> None:
        """A failure no handler sees (the receivers' and delay mover's ``report``)."""
        self.logger.warning("%s bus, topic %s: %s failed: %s", self.label, topic, where, error)
        self.observer.error(topic, adapter=self.adapter, where=where, error=error)

    def trimmed(self, topic: str, group: str, stream: str, ids: list[str]) -> None:
        """Entries of ``stream`` trimmed while pending for ``group``: lost, so counted too."""
        self.lost_to_trimming += len(ids)
        error = TransportError(
            f"{len(ids)} pending entr{'y' if len(ids) == 1 else 'ies'} of stream {stream!r} "
            f"(group {group!r}) trimmed before being handled: {', '.join(ids[:20])}; "
            f"raise max_stream_length above the pending backlog"
        )
        self.logger.error("%s: %s", self.label, error)
        self.observer.error(topic, adapter=self.adapter, where="trimmed", error=error)

    async def health(self, probe: Probe, *, closed: bool) -> HealthStatus:
        """Healthy when ``probe`` returns; its latency, the target and the trimmed count as
        details, and the scrubbed error when it raises (or ``closed`` without asking)."""
        details: dict[str, Any] = {
            "target": self.target,
            "lost_to_trimming": self.lost_to_trimming,
        }
        return await probe_health(
            probe, adapter=self.adapter, closed=closed, details=details, secrets=self.secrets
        )
