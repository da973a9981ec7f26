"""What happens to one delivered message: decode, the handler, and the outcome.

:class:`MessageHandling` is built once per subscription, so everything optional (the observer's
context manager, the handler's time limit, a middleware chain) is decided once, not per message.
The outcome goes back to the subscription through three callables: ``ack`` (handled or
dead-lettered), ``retry_later`` (failed; deliver again after a delay) and ``report``
(something outside the handler went wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from dotmac.events.codec import Codec
from dotmac.events.dlq.entry import DLQEntry
from dotmac.events.dlq.headers import failure_headers, shown_headers, without_failure_headers
from dotmac.events.engine.failure_log import FailureLog
from dotmac.events.errors import DecodeError, HandlerTimeout, RetriesExhausted
from dotmac.events.event import Event, EventMetadata
from dotmac.events.middleware import ConsumeMiddleware
from dotmac.events.observability.observer import NoopObserver, Observer
from dotmac.events.policy import FailurePolicy
from dotmac.events.schemas import dump_model
from dotmac.events.transport import Delivery, RecordWriter

__all__ = [
    "ATTEMPTS_HEADER",
    "FIRST_FAILURE_HEADER",
    "REPLY_TO_HEADER",
    "MessageHandling",
    "observing",
    "report_error",
]

logger = logging.getLogger("dotmac.events")

REPLY_TO_HEADER = "dotmac-reply-to"
"""Header naming the topic a request's reply goes to."""

ATTEMPTS_HEADER = "dotmac-retry-attempts"
"""On a rescheduled retry (non-blocking mode): how many attempts failed before this copy."""

FIRST_FAILURE_HEADER = "dotmac-retry-first-failure-at"
"""On a rescheduled retry: when its first attempt failed (ISO 8601, UTC)."""

Reschedule = Callable[[Event, float], Awaitable[None]]
"""``reschedule(copy, delay)``: publish a retry copy to the group's retry topic, delayed."""

Call = Callable[[Event], Awaitable[Any]]


def _being_cancelled() -> bool:
    """True when this task was cancelled, False for a CancelledError a handler raised itself."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _stopping_always() -> bool:
    return True


@contextlib.contextmanager
def observing(hook: str, topic: str) -> Iterator[None]:
    """Observers must not raise; one that does is logged, and never costs a message."""
    try:
        yield
    except Exception:
        logger.exception("observer hook %s failed on topic %s", hook, topic)


def _chain(handler: Call, middleware: Sequence[ConsumeMiddleware]) -> Call:
    call = handler
    for step in reversed(middleware):

        def link(event: Event, step: ConsumeMiddleware = step, rest: Call = call) -> Any:
            return step(event, rest)

        call = link
    return call


def _with_timeout(call: Call, timeout: float, topic: str) -> Call:
    async def limited(event: Event) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await call(event)
        except TimeoutError as exc:
            raise HandlerTimeout(f"handler for {topic!r} ran past {timeout}s") from exc

    return limited


def _earlier_attempts(event: Event, delivery: Delivery) -> int:
    """Attempts a rescheduled copy's predecessors used (from its headers); a header another
    client mangled counts as none, so the copy is still handled."""
    try:
        earlier = max(int(event.headers[ATTEMPTS_HEADER]), 0)
    except ValueError:
        return 0
    if delivery.first_failure_at is None:
        try:
            delivery.first_failure_at = datetime.fromisoformat(event.headers[FIRST_FAILURE_HEADER])
        except (KeyError, ValueError):
            pass
    return earlier


def report_error(
    observer: Observer, adapter: str, topic: str, group: str, where: str, error: BaseException
) -> None:
    """A failure outside a handler (fetch, ack, redeliver, close): logged and given to the
    observer, whose own failure is logged instead of stopping the subscription."""
    logger.warning("%s bus, topic %s, group %s: %s failed: %r", adapter, topic, group, where, error)
    with observing("error", topic):
        observer.error(topic, adapter=adapter, where=where, error=error)


class MessageHandling:
    """Turns one Delivery into a handler call and an outcome (ack, retry later, dead letter)."""

    def __init__(
        self,
        *,
        topic: str,
        group: str,
        adapter: str,
        handler: Call,
        codec: Codec,
        observer: Observer,
        policy: FailurePolicy,
        publish: Callable[[Event], Awaitable[None]],
        ack: Callable[[Delivery], None],
        retry_later: Callable[[Delivery, float], None],
        report: Callable[[str, BaseException], None],
        middleware: Sequence[ConsumeMiddleware] = (),
        reschedule: Reschedule | None = None,
        send_raw: RecordWriter | None = None,
        stopping: Callable[[], bool] = _stopping_always,
    ) -> None:
        self.topic = topic
        self._stopping = stopping
        self._reschedule = reschedule
        self._send_raw = send_raw
        self.group = group
        self._adapter = adapter
        self._decode = codec.decode
        self._observer = observer
        self._observed = type(observer) is not NoopObserver
        self._consuming = observer.consuming  # looked up once, not per message
        self._policy = policy
        self._publish = publish
        self._ack = ack
        self._retry_later = retry_later
        self._report = report
        self._failure_log = None if self._observed else FailureLog(topic, group)
        call = _chain(handler, middleware)
        timeout = policy.handler_timeout
        self._call = call if timeout is None else _with_timeout(call, timeout, topic)

    async def process(self, delivery: Delivery) -> None:
        """Handle one message; every path ends in ack, retry_later or a dead letter."""
        if delivery.unreadable is not None:
            await self.dead_letter(delivery, None, DecodeError(delivery.unreadable))
            return
        try:
            event = self._decode(delivery.data)
        except DecodeError as exc:
            await self.dead_letter(delivery, None, exc)
            return
        if delivery.headers or event.topic != self.topic:
            event = self.as_received(delivery, event)
        if delivery.dead_letter_due is not None:  # its dead-letter publish failed: only retry that
            error, attempts = delivery.dead_letter_due
            await self.dead_letter(delivery, event, error, attempts)
            return
        attempt = delivery.count
        if event.headers and ATTEMPTS_HEADER in event.headers:  # a rescheduled retry
            attempt += _earlier_attempts(event, delivery)
        if attempt > 1 and self._policy.retry_budget_spent(attempt):
            # Earlier deliveries used every attempt, and the consumer holding the last one died
            # before dead-lettering it: dead-letter now instead of calling the handler again.
            spent = RetriesExhausted(f"all {attempt - 1} attempts failed in earlier deliveries")
            await self.dead_letter(delivery, event, spent, attempt - 1)
            return
        event._received(
            attempt,
            self.group,
            delivery.message_id,
            delivery.partition,
            delivery.offset,
            delivery.first_failure_at,
        )
        try:
            if self._observed:
                with self._consuming(event, group=self.group, adapter=self._adapter):
                    result = await self._call(event)
            else:
                result = await self._call(event)
        except BaseException as exc:
            if self._ends_the_worker(exc):
                raise
            await self._failed(delivery, event, exc, attempt)
            return
        if event.headers:
            reply_to = event.headers.get(REPLY_TO_HEADER)
            if reply_to is not None:
                await self._reply(event, reply_to, result)
        self._ack(delivery)

    def _ends_the_worker(self, exc: BaseException) -> bool:
        """True when ``exc`` must stop the worker with its message unacked: KeyboardInterrupt and
        SystemExit (the process is going down), and a cancellation while the subscription is
        stopping (``stopping()``: close(), or the loop's shutdown). Anything else is the
        handler failing on this message, a BaseException subclass or a ``cancel()`` the handler
        aimed at its own task included: a worker that died of it would leave its lane's keys
        unhandled for good."""
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return True
        if not isinstance(exc, asyncio.CancelledError) or not _being_cancelled():
            return False
        if self._stopping():
            return True
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return False

    def as_received(self, delivery: Delivery, event: Event) -> Event:
        """The decoded event as this subscription received it: a dead letter's or replay's
        transport headers merged into its headers, and ``topic`` naming the topic it was read
        from (a dead letter's bytes still name its original topic, which its headers keep)."""
        if delivery.headers:
            shown = shown_headers(delivery.headers)
            if shown is not None:
                event = event.with_headers(shown)
        if event.topic != self.topic:
            event = dataclasses.replace(event, topic=self.topic)
        return event

    async def _failed(
        self, delivery: Delivery, event: Event, exc: BaseException, attempt: int
    ) -> None:
        delay = self._policy.retry_delay(exc, attempt)
        if delay is None:
            await self.dead_letter(delivery, event, exc, attempt)
            return
        if delivery.first_failure_at is None:
            delivery.first_failure_at = datetime.now(UTC)
        if self._reschedule is None or not await self._rescheduled(delivery, event, attempt, delay):
            self._retry_later(delivery, delay)
        if self._failure_log is not None:
            self._failure_log.retrying(attempt, delay, exc)
        with observing("retried", self.topic):
            self._observer.retried(
                event,
                group=self.group,
                adapter=self._adapter,
                attempt=attempt,
                delay=delay,
                error=exc,
            )

    async def _rescheduled(
        self, delivery: Delivery, event: Event, attempt: int, delay: float
    ) -> bool:
        """Publish the retry copy, delayed, then ack the original; False when the broker did not
        take the copy (the original then waits here, blocking, as in redeliver mode)."""
        assert self._reschedule is not None
        first = delivery.first_failure_at or datetime.now(UTC)
        copy = event.with_headers(  # same id: a consumer can tell it is the same event
            {ATTEMPTS_HEADER: str(attempt), FIRST_FAILURE_HEADER: first.isoformat()}
        )
        try:
            await self._reschedule(copy, delay)
        except Exception as exc:
            self._report("reschedule", exc)
            return False
        self._ack(delivery)
        return True

    async def dead_letter(
        self,
        delivery: Delivery,
        event: Event | None,
        error: BaseException,
        attempts: int | None = None,
    ) -> None:
        """Write the dead letter, and only then ack; if that write fails, try again later
        (writing only, without calling the handler again).

        The dead letter is the original record (bytes, key, transport headers) plus the failure
        headers of :mod:`dotmac.events.dlq.headers`; a transport that cannot write headers
        publishes the old wrapper event (``DLQEntry.to_event``) instead."""
        attempts = delivery.count if attempts is None else attempts
        dlq_topic = self._policy.dlq_topic_for(self.topic)
        try:
            if self._send_raw is not None:
                await self._send_raw(
                    dlq_topic,
                    delivery.data,
                    delivery.key,
                    self._dead_letter_headers(delivery, error, attempts),
                )
            else:
                entry = DLQEntry.for_failure(
                    topic=self.topic,
                    group=self.group,
                    data=delivery.data,
                    error=error,
                    attempts=attempts,
                    first_failure_at=delivery.first_failure_at,
                    event=event,
                    key=delivery.key,
                )
                await self._publish(entry.to_event(dlq_topic))
        except Exception as exc:
            self._report("dead-letter", exc)
            delivery.dead_letter_due = (error, attempts)
            self._retry_later(delivery, self._policy.backoff_delay(delivery.count))
            return
        self._ack(delivery)
        if self._failure_log is not None:
            self._failure_log.dead_lettered(attempts, dlq_topic, error)
        with observing("dead_lettered", self.topic):
            self._observer.dead_lettered(
                self.topic,
                group=self.group,
                adapter=self._adapter,
                dlq_topic=dlq_topic,
                attempts=attempts,
                error=error,
                event=event,
            )

    def _dead_letter_headers(
        self, delivery: Delivery, error: BaseException, attempts: int
    ) -> list[tuple[str, bytes]]:
        """The original's own headers (failure headers of an earlier dead-lettering replaced),
        then this failure's."""
        now = datetime.now(UTC)
        own = without_failure_headers(delivery.headers) if delivery.headers else []
        return own + failure_headers(
            topic=self.topic,
            group=self.group,
            error=error,
            attempts=attempts,
            first_failure_at=delivery.first_failure_at or now,
            last_failure_at=now,
            original_id=delivery.message_id,
            partition=delivery.partition,
            offset=delivery.offset,
        )

    async def _reply(self, event: Event, reply_to: str, result: Any) -> None:
        """Send the handler's return value to the requester; a model instance (pydantic,
        msgspec Struct, dataclass) goes as its JSON dump, as ``publish`` would send it."""
        correlation_id = event.metadata.correlation_id if event.metadata else None
        payload = dump_model(result)
        reply = Event(reply_to, payload, metadata=EventMetadata(correlation_id=correlation_id))
        try:
            await self._publish(reply)
        except Exception as exc:  # the handler succeeded; the requester times out
            self._report("reply", exc)
