"""PublishingBus: the publish side of the engine, once for every transport.

Encoding, publish hooks and schemas, the size limit, observers, delayed publishing and raw record
writes (dead letters) sit here above a transport's ``_send``, ``_schedule`` and ``_send_raw``.
:mod:`dotmac.events.engine.subscribing` builds the consuming side on top of it.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from dotmac.events.bus import EventBus
from dotmac.events.codec import Codec, JsonCodec
from dotmac.events.delays import due_time
from dotmac.events.errors import (
    BusClosedError,
    ConfigurationError,
    EncodeError,
    EventBusError,
    PublishError,
    UnsupportedOperation,
)
from dotmac.events.event import Event
from dotmac.events.middleware import PublishHook
from dotmac.events.observability.observer import NoopObserver, Observer
from dotmac.events.schemas import TopicSchema
from dotmac.events.transport import RecordWriter

__all__ = ["MAX_EVENT_BYTES", "PublishingBus"]

MAX_EVENT_BYTES = 1_048_576
"""The default bound on one encoded event (1 MiB, Kafka's default ``max_request_size``)."""


class PublishingBus(EventBus):
    """The publish paths of :class:`~dotmac.events.engine.TransportBus`."""

    adapter = "transport"

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        observer: Observer | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if (
            not isinstance(max_event_bytes, int)
            or isinstance(max_event_bytes, bool)
            or max_event_bytes < 1
        ):
            raise ConfigurationError(
                "max_event_bytes", f"must be an int >= 1, got {max_event_bytes!r}"
            )
        self.max_event_bytes = max_event_bytes
        """Publishing an event whose encoded bytes exceed this raises EncodeError."""
        self.codec: Codec = codec or JsonCodec()
        self.observer: Observer = observer or NoopObserver()
        self._observed = type(self.observer) is not NoopObserver
        self._publish_hooks: list[PublishHook] = []
        self._schemas: dict[str, TopicSchema] = {}
        self._closing = False  # no new subscriptions; publishing still works for handlers
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError(f"{self.adapter} bus is closed")

    def _check_not_closing(self) -> None:
        if self._closing:
            raise BusClosedError(f"{self.adapter} bus is closed")

    @abc.abstractmethod
    async def _send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """Send encoded events; return when the broker accepted all of them."""

    async def _schedule(self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float) -> None:
        """Keep encoded events in the broker until Unix time ``due``, then append them to
        ``topic`` as ``_send`` would (keys kept). Return once the broker holds them durably:
        they must reach ``topic`` even if every process of ours restarts. Never early."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot delay events")

    async def _send_raw(
        self, topic: str, data: bytes, key: str | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Write one record as it is, with transport headers (``transport.RecordWriter``): how
        dead letters and their replays are written. A transport without it dead-letters the old
        wrapper event instead, and cannot replay dead letters."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot write record headers")

    async def _delete_records(self, topic: str, positions: Sequence[str]) -> int:
        """Delete the records at ``positions`` (as ``_read_log`` gave them); return how many
        were there. Transports that cannot delete one record raise UnsupportedOperation."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot delete single records")

    async def _delete_all(self, topic: str) -> None:
        """Delete every record ``topic`` holds now (its groups stay)."""
        raise UnsupportedOperation(f"the {self.adapter} transport cannot delete records")

    def _now(self) -> float:
        """The Unix time delays are measured from (memory's clock can be moved by tests)."""
        return time.time()

    def add_publish_hook(self, hook: PublishHook) -> None:
        """Run ``hook(event) -> event`` on every publish, in the order added; raising refuses."""
        if not callable(hook):
            raise ConfigurationError("hook", f"must be callable, got {hook!r}")
        self._publish_hooks.append(hook)

    def register_schema(self, topic: str, model: type[Any]) -> None:
        """Give ``topic`` a payload schema: a pydantic v2 model, a msgspec Struct or a dataclass.

        From now on ``publish`` checks payloads for ``topic`` (raising ValidationError, which
        names the field), dumps a model instance to JSON and sets ``metadata.schema_version``;
        subscriptions to ``topic`` made from now on dead-letter payloads that do not match
        (as a DecodeError) without calling the handler. Register before subscribing.

        Raises:
            ConfigurationError: ``model`` is not a pydantic model, a Struct or a dataclass.
        """
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("topic", f"must be a non-empty str, got {topic!r}")
        if not self._schemas:  # an ordinary publish hook, run first: no cost until used
            self._publish_hooks.insert(0, self._schema_checked)
        self._schemas[topic] = TopicSchema(model)

    def _schema_checked(self, event: Event) -> Event:
        schema = self._schemas.get(event.topic)
        return event if schema is None else schema.for_publish(event)

    def _hooked(self, event: Event) -> Event:
        for hook in self._publish_hooks:
            event = hook(event)
            if not isinstance(event, Event):
                raise ConfigurationError(
                    "hook", f"a publish hook must return an Event, got {type(event).__name__}"
                )
        return event

    async def publish(
        self,
        event: Event,
        *,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> None:
        """See :meth:`EventBus.publish`; ``delay``/``at`` hold the event in the broker until due."""
        if self._publish_hooks:
            event = self._hooked(event)
        if delay is None and at is None:
            await self._publish(event)
            return
        due = due_time(delay, at, self._now())
        if due is not None and due > self._now():
            await self.publish_later(event.topic, [event], due)
        else:
            await self._publish(event)

    async def publish_later(self, topic: str, events: Sequence[Event], due: float) -> None:
        """Hand ``events`` to the broker to append to ``topic`` at Unix time ``due``, without
        the publish hooks. ``topic`` may differ from the events' own (a retry topic): the
        events keep theirs, so handlers see the topic they were published to."""
        self._check_open()
        encode = self.codec.encode
        if not self._observed:
            batch = [(event, encode(event)) for event in events]
            await self._schedule_translated(topic, batch, due)
            return
        with contextlib.ExitStack() as stack:
            batch = []
            for event in events:
                extra = stack.enter_context(self.observer.publishing(event, adapter=self.adapter))
                ready = event.with_headers(extra) if extra else event
                batch.append((ready, encode(ready)))
            await self._schedule_translated(topic, batch, due)

    async def _schedule_translated(
        self, topic: str, batch: Sequence[tuple[Event, bytes]], due: float
    ) -> None:
        self._check_sizes(batch)
        try:
            await self._schedule(topic, batch, due)
        except EventBusError:
            raise
        except Exception as exc:
            raise PublishError(f"{self.adapter}: delayed publish failed: {exc!r}") from exc

    async def _publish(self, event: Event) -> None:
        """Publish without the publish hooks: how the engine sends dead letters and replies,
        which a hook meant for application events must not refuse."""
        self._check_open()
        if self._observed:
            with self.observer.publishing(event, adapter=self.adapter) as extra:
                if extra:
                    event = event.with_headers(extra)
                await self._send_translated([(event, self.codec.encode(event))])
        else:
            await self._send_translated([(event, self.codec.encode(event))])

    async def publish_many(self, events: Sequence[Event]) -> None:
        self._check_open()
        if not events:
            return
        if self._publish_hooks:
            events = [self._hooked(event) for event in events]
        if not self._observed:
            encode = self.codec.encode
            await self._send_translated([(event, encode(event)) for event in events])
            return
        with contextlib.ExitStack() as stack:
            batch = []
            for event in events:
                extra = stack.enter_context(self.observer.publishing(event, adapter=self.adapter))
                ready = event.with_headers(extra) if extra else event
                batch.append((ready, self.codec.encode(ready)))
            await self._send_translated(batch)

    def _check_sizes(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """Refuse the whole batch, before anything is sent, if one event is too large."""
        limit = self.max_event_bytes
        for event, data in batch:
            if len(data) > limit:
                raise EncodeError(
                    f"event for topic {event.topic!r} is {len(data)} bytes encoded, above "
                    f"max_event_bytes ({limit}); nothing of this publish was sent"
                )

    async def _send_translated(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        self._check_sizes(batch)
        try:
            await self._send(batch)
        except EventBusError:
            raise
        except Exception as exc:  # a transport bug must still surface as our error
            raise PublishError(f"{self.adapter}: publish failed: {exc!r}") from exc

    def _record_writer(self) -> RecordWriter | None:
        """``_send_raw`` with errors translated, or None when the transport has none."""
        if type(self)._send_raw is PublishingBus._send_raw:
            return None
        return self.send_record

    async def send_record(
        self,
        topic: str,
        data: bytes,
        key: str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Write one record as it is: ``data`` unencoded, ``headers`` as transport headers
        (Kafka record headers, extra Redis entry fields). No publish hooks, no observer: this
        is how dead letters and their replays travel, byte for byte.

        Raises:
            UnsupportedOperation: the transport cannot write record headers.
            PublishError: the broker did not take the record.
        """
        self._check_open()
        try:
            await self._send_raw(topic, data, key, headers)
        except EventBusError:
            raise
        except Exception as exc:
            raise PublishError(f"{self.adapter}: record write failed: {exc!r}") from exc
