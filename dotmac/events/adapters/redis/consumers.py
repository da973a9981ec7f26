"""Consumer names for the subscriptions of one Redis bus (single server or cluster).

Redis keeps pending entries per consumer name, so two subscriptions of one bus to the same
stream (or cluster topic) and group must not share a name. The configured ``consumer_name``
serves the first; later ones get ``-2``, ``-3``... after it, the same on every start, so a
restarted process takes back what each of its subscriptions held. Without a configured name,
every subscription gets a name of its own (``default_consumer_name``).
"""

from __future__ import annotations

from dotmac.events.adapters.redis_config import default_consumer_name

__all__ = ["ConsumerNames"]


class ConsumerNames:
    """Hands out the consumer name of each new subscription of one bus."""

    def __init__(self, configured: str | None) -> None:
        self._configured = configured
        self._taken: dict[tuple[str, str], int] = {}

    def take(self, source: str, group: str) -> str:
        """The name of a new subscription of ``group`` to ``source`` (a stream or a topic)."""
        if self._configured is None:
            return default_consumer_name()
        n = self._taken[source, group] = self._taken.get((source, group), 0) + 1
        return self._configured if n == 1 else f"{self._configured}-{n}"
