"""MemoryConfig: the settings of the in-process bus."""

from __future__ import annotations

from dataclasses import dataclass

from dotmac.events.errors import ConfigurationError

__all__ = ["MemoryConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryConfig:
    """Settings of the memory bus.

    ``max_queue_size`` bounds, per topic, the events some group has not yet acked: ``publish``
    waits for room up to ``publish_timeout`` seconds, then raises PublishError. On a topic with
    no group, only the newest ``max_queue_size`` events are kept for a group that joins later.
    ``enable_persistence`` keeps every event (see :meth:`MemoryBus.history`).
    ``new_group_start`` is where a named group that does not exist yet begins.
    """

    max_queue_size: int = 10_000
    enable_persistence: bool = False
    publish_timeout: float = 30.0
    new_group_start: str = "earliest"
    close_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_queue_size, int) or self.max_queue_size < 1:
            raise ConfigurationError(
                "max_queue_size", f"must be an int >= 1, got {self.max_queue_size!r}"
            )
        if not isinstance(self.publish_timeout, int | float) or not self.publish_timeout > 0:
            raise ConfigurationError(
                "publish_timeout", f"must be > 0 seconds, got {self.publish_timeout!r}"
            )
        if self.new_group_start not in ("earliest", "latest"):
            raise ConfigurationError(
                "new_group_start", f"must be 'earliest' or 'latest', got {self.new_group_start!r}"
            )
        if not isinstance(self.close_timeout, int | float) or not self.close_timeout > 0:
            raise ConfigurationError("close_timeout", f"must be > 0, got {self.close_timeout!r}")
