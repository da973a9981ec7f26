"""Streams and consumers: created on first use, or bound to when they already exist.

A stream that exists is used as it is (its limits may have been set by an operator with the
``nats`` CLI); only a missing one is created, from :class:`NatsConfig`. Topics are listed from
the streams whose subject lies under ``subject_prefix``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from dotmac.events.adapters.nats.errors import is_not_found, nats_errors
from dotmac.events.adapters.nats.pull import API_PREFIX
from dotmac.events.adapters.nats_config import NatsConfig

__all__ = ["StreamCatalog"]

_STREAM_IN_USE = 10058  # "stream name already in use": created meanwhile by another process
_CONSUMER_EXISTS = (10013, 10148)  # "consumer name already in use" / "consumer already exists"


class StreamCatalog:
    """Knows which topic streams exist (once checked, a topic is not checked again)."""

    def __init__(self, client: Client, js: JetStreamContext, config: NatsConfig) -> None:
        self._client = client
        self.js = js
        self.config = config
        self._known: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def stream_config(self, name: str, subjects: list[str]) -> js_api.StreamConfig:
        config = self.config
        return js_api.StreamConfig(
            name=name,
            subjects=subjects,
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE
            if config.storage == "file"
            else js_api.StorageType.MEMORY,
            num_replicas=config.replicas,
            max_age=config.max_age,
            max_msgs=config.max_msgs,
            max_bytes=config.max_bytes,
            duplicate_window=config.duplicate_window,
            allow_direct=True,
        )

    async def ensure(self, topic: str) -> bool:
        """Make sure ``topic``'s stream exists; True when this call created it."""
        if topic in self._known:
            return False
        name = self.config.stream_name(topic)
        return await self.ensure_stream(topic, name, [self.config.subject(topic)])

    async def ensure_stream(self, key: str, name: str, subjects: list[str]) -> bool:
        if key in self._known:
            return False
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._known:
                return False
            created = False
            with nats_errors(f"create stream {name}", self.config.secrets):
                try:
                    await self.js.stream_info(name)
                except js_errors.NotFoundError:
                    try:
                        await self.js.add_stream(self.stream_config(name, subjects))
                        created = True
                    except js_errors.APIError as exc:
                        if exc.err_code != _STREAM_IN_USE:
                            raise
            self._known.add(key)
            self._locks.pop(key, None)
            return created

    def forget(self, topic: str) -> None:
        """Check again on next use (the stream was deleted, or a publish found none)."""
        self._known.discard(topic)

    async def ensure_consumer(self, stream: str, config: js_api.ConsumerConfig) -> str:
        """Create the consumer unless a durable of that name exists; returns its name."""
        with nats_errors(f"create consumer on {stream}", self.config.secrets):
            if config.durable_name:
                try:
                    await self.js.consumer_info(stream, config.durable_name)
                    return config.durable_name
                except js_errors.NotFoundError:
                    pass
            try:
                info = await self.js.add_consumer(stream, config)
            except js_errors.APIError as exc:
                if config.durable_name and exc.err_code in _CONSUMER_EXISTS:
                    return config.durable_name
                raise
            assert info.name is not None
            return info.name

    async def delete_consumer(self, stream: str, consumer: str) -> None:
        with nats_errors(f"delete consumer {consumer} of {stream}", self.config.secrets):
            try:
                await self.js.delete_consumer(stream, consumer)
            except Exception as exc:
                if not is_not_found(exc):
                    raise

    async def delete_stream(self, topic: str) -> None:
        name = self.config.stream_name(topic)
        self._known.discard(topic)
        with nats_errors(f"delete stream {name}", self.config.secrets):
            try:
                await self.js.delete_stream(name)
            except Exception as exc:
                if not is_not_found(exc):
                    raise

    async def topics(self) -> list[str]:
        """Every topic with a stream under ``subject_prefix`` (paged ``STREAM.LIST``)."""
        found: list[str] = []
        offset = 0
        subject_filter = f"{self.config.subject_prefix}.>"
        with nats_errors("list streams", self.config.secrets):
            while True:
                reply = await self._client.request(
                    f"{API_PREFIX}.STREAM.LIST",
                    orjson.dumps({"offset": offset, "subject": subject_filter}),
                    timeout=self.config.publish_timeout,
                )
                page: dict[str, Any] = orjson.loads(reply.data)
                if "error" in page:
                    js_errors.APIError.from_error(page["error"])
                streams = page.get("streams") or []
                for stream in streams:
                    for subject in stream.get("config", {}).get("subjects") or []:
                        topic = self.config.topic_of(subject)
                        if topic is not None:
                            found.append(topic)
                offset += len(streams)
                if not streams or offset >= int(page.get("total", 0)):
                    return found
