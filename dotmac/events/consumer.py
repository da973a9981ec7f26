"""run_consumer: a subscription with a retry budget, exponential backoff and a dead-letter topic.

Each delivery of a message is one handler attempt, and the attempt number is the message's
delivery count. So retries survive a crash: a message redelivered to another process after its
consumer died continues its budget instead of starting from zero. ``max_retries=N`` allows at
most N + 1 handler calls; after the last failure a :class:`~dotmac.events.dlq.DLQEntry` is
published to the dead-letter topic, and only once that publish succeeded is the message acked.

This module holds the options; the loop that applies them is the engine's
(:mod:`dotmac.events.engine.subscription` for the flow, :mod:`dotmac.events.engine.handling`
for one message).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.bus import EventBus, EventHandler, Subscription
from dotmac.events.errors import ConfigurationError, Reject
from dotmac.events.policy import RetryMode

__all__ = [
    "ConsumerOptions",
    "ExponentialBackoff",
    "RetryPolicy",
    "create_exponential_retry_options",
    "run_consumer",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times to retry, and which exceptions are worth retrying at all.

    An exception that is not an instance of ``retry_on_exceptions`` (and any
    :class:`~dotmac.events.errors.Reject`) goes to the dead-letter topic at once.
    """

    max_retries: int = 3
    retry_on_exceptions: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigurationError(
                "max_retries", f"must be an int >= 0, got {self.max_retries!r}"
            )
        if not isinstance(self.retry_on_exceptions, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on_exceptions
        ):
            raise ConfigurationError("retry_on_exceptions", "must be a tuple of exception classes")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True when failed attempt ``attempt`` (1-based) may be followed by another."""
        if isinstance(error, Reject) or not isinstance(error, self.retry_on_exceptions):
            return False
        return attempt <= self.max_retries


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerOptions:
    """Retry, backoff, dead-letter and timeout settings for :func:`run_consumer`.

    ``retry_policy``, when given, takes the place of ``max_retries`` and ``retry_on_exceptions``.
    ``retry_mode`` chooses blocking redelivery (the default) or non-blocking retries through
    the broker's delayed delivery; :data:`~dotmac.events.policy.RetryMode` gives the trade-off.
    The delay before attempt n + 1 is ``min(backoff_base_ms * backoff_multiplier ** (n - 1),
    backoff_max_delay_ms)``, drawn from its upper half when ``jitter`` is on.
    """

    max_retries: int = 3
    backoff_base_ms: float = 100.0
    backoff_multiplier: float = 2.0
    backoff_max_delay_ms: float = 30_000.0
    jitter: bool = True
    dlq_topic: str | None = None
    retry_on_exceptions: tuple[type[BaseException], ...] = (Exception,)
    retry_policy: RetryPolicy | None = None
    handler_timeout: float | None = None
    retry_mode: RetryMode = "redeliver"
    backoff: ExponentialBackoff = field(init=False, repr=False, compare=False)
    policy: RetryPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        policy = self.retry_policy or RetryPolicy(
            max_retries=self.max_retries, retry_on_exceptions=self.retry_on_exceptions
        )
        backoff = ExponentialBackoff(
            base_ms=self.backoff_base_ms,
            multiplier=self.backoff_multiplier,
            max_ms=self.backoff_max_delay_ms,
            jitter=self.jitter,
        )
        if self.dlq_topic is not None and (
            not isinstance(self.dlq_topic, str) or not self.dlq_topic
        ):
            raise ConfigurationError(
                "dlq_topic", f"must be a non-empty str, got {self.dlq_topic!r}"
            )
        if self.handler_timeout is not None and not (
            isinstance(self.handler_timeout, int | float) and 0 < self.handler_timeout < math.inf
        ):
            raise ConfigurationError(
                "handler_timeout", f"must be > 0 seconds or None, got {self.handler_timeout!r}"
            )
        if self.retry_mode not in ("redeliver", "reschedule"):
            raise ConfigurationError(
                "retry_mode", f"must be 'redeliver' or 'reschedule', got {self.retry_mode!r}"
            )
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "backoff", backoff)

    # FailurePolicy, used by the subscription engine.

    def dlq_topic_for(self, topic: str) -> str:
        return self.dlq_topic or f"{topic}.DLQ"

    def retry_delay(self, error: BaseException, attempt: int) -> float | None:
        if not self.policy.should_retry(error, attempt):
            return None
        return self.backoff.delay(attempt)

    def backoff_delay(self, attempt: int) -> float:
        return self.backoff.delay(attempt)

    def retry_budget_spent(self, attempt: int) -> bool:
        return attempt > self.policy.max_retries + 1


def create_exponential_retry_options(
    max_retries: int = 3,
    base_delay_ms: float = 100.0,
    max_delay_ms: float = 30_000.0,
    dlq_topic: str | None = None,
    *,
    multiplier: float = 2.0,
    jitter: bool = True,
) -> ConsumerOptions:
    """ConsumerOptions with exponential backoff from ``base_delay_ms`` up to ``max_delay_ms``."""
    return ConsumerOptions(
        max_retries=max_retries,
        backoff_base_ms=base_delay_ms,
        backoff_multiplier=multiplier,
        backoff_max_delay_ms=max_delay_ms,
        jitter=jitter,
        dlq_topic=dlq_topic,
    )


async def run_consumer(
    bus: EventBus,
    topic: str,
    handler: EventHandler,
    options: ConsumerOptions | None = None,
    *,
    group: str | None = None,
    concurrency: int = 1,
) -> Subscription:
    """Start consuming ``topic`` with retries and dead-lettering; returns the running subscription.

    It returns as soon as the consumer has joined its group; close the subscription (or the bus)
    to stop it. See the module docstring for the retry and dead-letter rules.
    """
    return await bus.subscribe(
        topic,
        handler,
        group=group,
        concurrency=concurrency,
        policy=options or ConsumerOptions(),
    )
