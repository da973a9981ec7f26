"""How a subscription treats a failed handler: retry after a delay, or dead-letter now."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.errors import Reject

__all__ = ["FailurePolicy", "RedeliverPolicy", "RetryMode"]

RetryMode = Literal["redeliver", "reschedule"]
"""How a failed message waits for its next attempt.

``"redeliver"`` (blocking): it stays unacknowledged and this consumer delivers it again after
the backoff; it keeps its place, so a key's later messages wait behind it (order kept), and it
holds one prefetch slot while it waits. ``"reschedule"`` (non-blocking): a copy carrying its
attempt count is published, delayed by the backoff, to the group's own retry topic
``_retry.<group>.<topic>`` and the original is acknowledged once the broker holds the copy. The
stream moves on at once and the retry is visible in the broker, but a key's later messages are
handled before the retried one (order is not kept for a failing message).
"""


@runtime_checkable
class FailurePolicy(Protocol):
    """Decides what happens to a message whose handler raised.

    ``attempt`` is the message's delivery count: the number of the attempt that just failed.
    """

    @property
    def retry_mode(self) -> RetryMode:
        """``"redeliver"`` or ``"reschedule"``: see :data:`RetryMode`."""
        ...

    @property
    def handler_timeout(self) -> float | None:
        """Seconds a handler may run before it counts as failed (HandlerTimeout); None: no limit."""
        ...

    def dlq_topic_for(self, topic: str) -> str:
        """The dead-letter topic for messages of ``topic``."""
        ...

    def retry_delay(self, error: BaseException, attempt: int) -> float | None:
        """Seconds to wait before delivering again, or None to dead-letter the message now."""
        ...

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retrying something that is not the handler's fault
        (a dead-letter publish that failed)."""
        ...

    def retry_budget_spent(self, attempt: int) -> bool:
        """True when delivery number ``attempt`` may not call the handler any more: earlier
        deliveries used every attempt (their consumer died before dead-lettering)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RedeliverPolicy:
    """The plain ``subscribe`` policy: redeliver with capped exponential backoff, forever.

    Only :class:`~dotmac.events.errors.Reject` (and undecodable messages) go to the dead-letter
    topic; use :func:`~dotmac.events.consumer.run_consumer` for a bounded retry budget.
    """

    backoff: ExponentialBackoff = field(default_factory=ExponentialBackoff)
    dlq_topic: str | None = None
    handler_timeout: float | None = None
    retry_mode: RetryMode = "redeliver"

    def dlq_topic_for(self, topic: str) -> str:
        return self.dlq_topic or f"{topic}.DLQ"

    def retry_delay(self, error: BaseException, attempt: int) -> float | None:
        if isinstance(error, Reject):
            return None
        return self.backoff.delay(attempt)

    def backoff_delay(self, attempt: int) -> float:
        return self.backoff.delay(attempt)

    def retry_budget_spent(self, attempt: int) -> bool:
        return False
