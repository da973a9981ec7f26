"""The consumer of one subscription on Redis Cluster: every partition stream, read per node.

Each partition is a :class:`~dotmac.events.adapters.redis.receiver.RedisReceiver` of its own
stream (same group, same consumer name), which keeps everything the single-server consumer does
per stream: its own pending entries first after a restart, XAUTOCLAIM of a dead consumer's
entries with their true delivery counts, heartbeats (XCLAIM JUSTID) for entries held, the
held-time hash, trimmed-entry reports, group re-creation. Only the hot path is done here, across
partitions: one fetch round is one pipeline of ``XACK`` + ``XREADGROUP COUNT n`` (no BLOCK: a
pipelined blocking read would stall the reads behind it) per partition, which redis-py's cluster
pipeline sends as one round trip per node, the nodes in parallel. A round that brings nothing
waits 1 ms, doubling to ``idle_poll_ms``. Reclaim passes run per partition, staggered over
``claim_interval``, so a round carries at most a few.

The fetch budget (``max_count``) is shared: partitions that filled their share last round split
it; the others are probed with a count of 1, so a hot partition is not held to ``1/P`` of it.

Deliveries carry the partition number in :attr:`Delivery.partition` (and so in the event's
``delivery.partition``); ``message_id`` is the entry id within that partition's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from dotmac.events.adapters.redis.errors import is_connection_error, is_no_group, translate
from dotmac.events.adapters.redis.receiver import RedisReceiver, _stream_entries
from dotmac.events.adapters.redis_cluster_config import RedisClusterConfig
from dotmac.events.backoff import ExponentialBackoff
from dotmac.events.transport import Delivery

__all__ = ["PartitionedReceiver", "shares"]

logger = logging.getLogger("dotmac.events.redis_cluster")


def shares(budget: int, hot: Sequence[bool], start: int) -> list[int]:
    """Entries to ask each partition for in one round, ``budget`` in all at most.

    Partitions that filled their share last round (``hot``) split what the probes (count 1 for
    each other partition) leave; with a budget smaller than the partitions, ``budget`` of them
    get 1 each, taking turns from ``start``.
    """
    count = len(hot)
    result = [0] * count
    if budget < count:
        for i in range(budget):
            result[(start + i) % count] = 1
        return result
    hot_ones = [i for i in range(count) if hot[i]] or list(range(count))
    cold = count - len(hot_ones)
    each, extra = divmod(budget - cold, len(hot_ones))
    for i in range(count):
        result[i] = 1
    for n, i in enumerate(hot_ones):
        result[i] = each + (1 if (n - start) % len(hot_ones) < extra else 0)
    return result


class PartitionedReceiver:
    """The Receiver (see dotmac.events.transport) of one topic's partitions, group and consumer."""

    def __init__(
        self,
        client: RedisCluster,
        config: RedisClusterConfig,
        *,
        topic: str,
        streams: Sequence[str],
        group: str,
        consumer: str,
        private: bool,
        start_id: str,
        report: Callable[[str, BaseException], None],
        on_trimmed: Callable[[str, list[str]], None],
    ) -> None:
        # RedisCluster routes each of the commands a RedisReceiver sends by its one stream key
        # (its transactions and scripts stay within that key's slot): it stands in for Redis.
        as_redis = cast(Redis, client)
        self._client = client
        self._secrets = config.secrets
        self._report = report
        self.topic = topic
        self.group = group
        self.consumer = consumer
        self.parts = [
            RedisReceiver(
                as_redis,
                config,
                topic=topic,
                stream=stream,
                group=group,
                consumer=consumer,
                private=private,
                start_id=start_id,
                report=report,
                on_trimmed=functools.partial(on_trimmed, stream),
            )
            for stream in streams
        ]
        now = time.monotonic()
        for n, part in enumerate(self.parts):  # stagger the reclaim passes over the interval
            part._next_claim = now + config.claim_interval * n / len(self.parts)
        self._hot = [True] * len(self.parts)
        self._turn = 0
        self._idle_rounds = 0
        self._idle_poll = config.idle_poll_ms / 1000
        self._backoff = ExponentialBackoff(
            base_ms=config.reconnect_backoff_base_ms,
            max_ms=config.reconnect_backoff_max_ms,
            jitter=True,
        )
        self._failures = 0
        self._interrupted = False
        self._wake = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the group on every partition (one round per node) and start the heartbeats."""
        results = await asyncio.gather(*(p.open() for p in self.parts), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.close()
            raise failed[0]

    def interrupt(self) -> None:
        self._interrupted = True
        for part in self.parts:
            part.interrupt()
        self._wake.set()

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.parts))

    # --- fetching ----------------------------------------------------------------------------

    def _route_acks(self, acks: Sequence[Delivery]) -> None:
        if not acks:
            return
        by_part: dict[int, list[Delivery]] = {}
        for delivery in acks:
            by_part.setdefault(delivery.partition or 0, []).append(delivery)
        for index, deliveries in by_part.items():
            self.parts[index]._forget(deliveries)

    async def fetch(self, max_count: int, acks: Sequence[Delivery]) -> Sequence[Delivery]:
        self._route_acks(acks)
        try:
            if self._interrupted:
                await self._round(0)
                return []
            batch = await self._special(max_count) or await self._round(max_count)
        except Exception as exc:
            if not is_connection_error(exc):
                raise self._error(exc, "read") from exc
            await self._wait_to_reconnect(exc)
            return []
        if self._failures:
            logger.warning(
                "redis cluster topic %s group %s: reconnected after %d failed attempt(s)",
                self.topic,
                self.group,
                self._failures,
            )
            self._failures = 0
        if batch:
            self._idle_rounds = 0
            return batch
        self._idle_rounds += 1
        await self._sleep(min(self._idle_poll, 0.001 * 2 ** min(self._idle_rounds, 16)))
        return []

    async def _special(self, max_count: int) -> list[Delivery]:
        """Own pending entries after a restart, then due reclaim passes (per partition)."""
        now = time.monotonic()
        found: list[Delivery] = []
        for index, part in enumerate(self.parts):
            if len(found) >= max_count:
                break
            if part._history_from is None and now < part._next_claim:
                continue
            ack_ids, part._unsent_acks = part._unsent_acks, []
            try:
                if part._history_from is not None:
                    got = await part._read_own_pending(max_count - len(found), ack_ids)
                else:
                    part._next_claim = now + part._claim_interval
                    got = await part._claim_idle(max_count - len(found), ack_ids)
                    if now >= part._next_cleanup:
                        part._next_cleanup = now + part._cleanup_interval
                        await part._remove_idle_consumers()
            except Exception as exc:
                part._unsent_acks[:0] = ack_ids
                if not is_no_group(exc):
                    raise
                await part._recreate_group(exc)
                continue
            for delivery in got:
                delivery.partition = index
            found += got
        return found

    async def _round(self, max_count: int) -> list[Delivery]:
        """One pipeline: each partition's acks and a non-blocking read of its share."""
        counts = shares(max_count, self._hot, self._turn) if max_count else [0] * len(self.parts)
        self._turn += 1
        pipe = self._client.pipeline(transaction=False)
        plan: list[tuple[int, str, list[str]]] = []  # (partition, what, ack ids)
        for index, part in enumerate(self.parts):
            ack_ids, part._unsent_acks = part._unsent_acks, []
            if ack_ids:
                pipe.xack(part.stream, self.group, *ack_ids)
                plan.append((index, "ack", ack_ids))
            if counts[index]:
                pipe.xreadgroup(self.group, self.consumer, {part.stream: ">"}, count=counts[index])
                plan.append((index, "read", ack_ids))
        if not plan:
            return []
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException:
            for index, what, ack_ids in plan:
                if what == "ack":
                    self.parts[index]._unsent_acks[:0] = ack_ids
            raise
        deliveries: list[Delivery] = []
        failure: BaseException | None = None
        for (index, what, ack_ids), reply in zip(plan, replies, strict=True):
            part = self.parts[index]
            if isinstance(reply, BaseException):
                if what == "ack":
                    part._unsent_acks[:0] = ack_ids  # sent with the next round
                elif is_no_group(reply):
                    await part._recreate_group(reply)
                else:
                    failure = failure or reply
                continue
            if what == "read":
                entries = _stream_entries(reply)
                self._hot[index] = len(entries) >= counts[index]
                for delivery in part._fresh(entries):
                    delivery.partition = index
                    deliveries.append(delivery)
        if failure is not None and not deliveries:
            raise failure
        return deliveries

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        if self._interrupted:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _wait_to_reconnect(self, exc: BaseException) -> None:
        self._failures += 1
        error = self._error(exc, "read")
        if self._failures == 1:
            self._report("connection", error)
        else:
            logger.debug("redis cluster topic %s: still reconnecting: %s", self.topic, error)
        await self._sleep(self._backoff.delay(self._failures))

    # --- outcomes ----------------------------------------------------------------------------

    def _by_part(self, deliveries: Sequence[Delivery]) -> dict[int, list[Delivery]]:
        found: dict[int, list[Delivery]] = {}
        for delivery in deliveries:
            found.setdefault(delivery.partition or 0, []).append(delivery)
        return found

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        groups = self._by_part(deliveries)
        await asyncio.gather(*(self.parts[i].ack(ds) for i, ds in groups.items()))

    async def redeliver(self, delivery: Delivery) -> Delivery | None:
        index = delivery.partition or 0
        again = await self.parts[index].redeliver(delivery)
        if again is not None:
            again.partition = index
        return again

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        groups = self._by_part(deliveries)
        await asyncio.gather(*(self.parts[i].release(ds) for i, ds in groups.items()))

    def _error(self, exc: BaseException, doing: str) -> Exception:
        return translate(
            exc,
            doing=f"{doing} on topic {self.topic} (group {self.group})",
            secrets=self._secrets,
        )
