"""Producing records with aiokafka under the bus's rules for resends, time and errors.

aiokafka retries a queued batch by itself until ``request_timeout_ms`` (the broker removes the
repeats with ``enable_idempotence``). Around that, :func:`produce` makes sure that:

* a publish ends by its deadline (``delivery_timeout_ms``), every wait included: metadata, a
  full queue, the acknowledgement (aiokafka's idempotent producer retries a batch without end);
* a record is sent again (at most ``retries`` times) only if it was never queued. A queued
  record may be stored even when its last error is a refusal, since an earlier attempt's reply
  may have been lost, and a second produce is a second copy that not even the idempotent
  producer removes;
* many records go out as closed batches, one chain per partition, and the first failure in a
  chain stops the rest of it, so a resend never puts a key's record after a later one;
* the PublishError says ``may_have_been_written=False`` only when no record of the call was
  queued, and ``retryable`` only when every failure is retriable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from dotmac.events.adapters.kafka.errors import is_retriable, translate
from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.errors import PublishError

__all__ = ["Record", "produce"]

Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers

_PARTITIONER = DefaultPartitioner()  # the producer's own: producer_kwargs() sets no partitioner


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why a record was not acknowledged; ``queued``: it was handed to aiokafka to send, so
    the broker may hold it."""

    error: BaseException
    queued: bool = True

    @property
    def resendable(self) -> bool:
        return not self.queued and is_retriable(self.error)


async def produce(
    producer: AIOKafkaProducer, records: list[Record], config: KafkaConfig, deadline: float
) -> None:
    """Send ``records`` and wait for their acknowledgements until ``deadline`` (loop time);
    PublishError if some fail (see the module docstring)."""
    if len(records) > 1:
        _refuse_oversized(records, config.max_request_size)
    loop = asyncio.get_running_loop()
    backoff = config.retry_backoff_ms / 1000
    reached = False  # some record of the call was queued: the broker may hold it
    resends = 0
    while True:
        if len(records) == 1:
            outcomes = [await _send_one(producer, records[0], deadline)]
        else:
            outcomes = await _send_chains(producer, records, deadline)
        reached = reached or any(outcome is None or outcome.queued for outcome in outcomes)
        failed = [(r, f) for r, f in zip(records, outcomes, strict=True) if f is not None]
        if not failed:
            return
        failures = [failure for _, failure in failed]
        if (
            not all(failure.resendable for failure in failures)
            or resends >= config.retries
            or loop.time() + backoff >= deadline
        ):
            worst = next((f for f in failures if not is_retriable(f.error)), failures[0])
            raise translate(
                worst.error,
                f"publish of {len(failed)} event(s)",
                publishing=True,
                may_have_been_written=reached,
            ) from worst.error
        resends += 1
        records = [record for record, _ in failed]
        await asyncio.sleep(backoff)


def _refuse_oversized(records: Sequence[Record], limit: int) -> None:
    """The whole call is refused, before anything is sent, if one record (value, key and
    headers) is above ``max_request_size``: as the engine refuses one over ``max_event_bytes``."""
    for key, value, headers in ((r[1], r[2], r[3]) for r in records):
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > limit:
            raise PublishError(
                f"kafka: publish of {len(records)} event(s) failed (not retriable): "
                f"MessageSizeTooLargeError: a record is {size} bytes, above max_request_size "
                f"({limit}); no event of the call was sent",
                retryable=False,
                may_have_been_written=False,
            )


def _not_queued(error: BaseException) -> _Failure:
    if isinstance(error, TimeoutError):
        error = KafkaTimeoutError("not queued within delivery_timeout_ms")
    return _Failure(error, queued=False)


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    """Read a delivery's outcome, so one nobody awaits any more (a publish that timed out or
    was cancelled) does not log "exception was never retrieved"."""
    if not delivery.cancelled():
        delivery.exception()


async def _delivered(delivery: asyncio.Future[Any], deadline: float) -> _Failure | None:
    """Wait for aiokafka's delivery future until ``deadline``. It is not cancelled on timeout:
    aiokafka may still send the batch, so the record may be stored, as the error says."""
    remaining = deadline - asyncio.get_running_loop().time()
    done, _ = await asyncio.wait([delivery], timeout=max(remaining, 0.0))
    if not done:
        return _Failure(KafkaTimeoutError("no acknowledgement within delivery_timeout_ms"))
    if delivery.cancelled():
        return _Failure(asyncio.CancelledError())
    error = delivery.exception()
    return None if error is None else _Failure(error)


async def _send_one(producer: AIOKafkaProducer, record: Record, deadline: float) -> _Failure | None:
    """One record through ``send``: it joins the batch aiokafka is lingering on, and only its
    own delivery is awaited."""
    topic, key, value, headers = record
    try:
        async with asyncio.timeout_at(deadline):
            delivery = await producer.send(topic, value, key=key, headers=headers)
    except Exception as exc:  # refused, no metadata or no room in time: never queued
        return _not_queued(exc)
    delivery.add_done_callback(_retrieve)
    return await _delivered(delivery, deadline)


async def _send_chains(
    producer: AIOKafkaProducer, records: Sequence[Record], deadline: float
) -> list[_Failure | None]:
    """Many records as closed batches, one chain per partition, in order: the batch is
    already formed, so it goes out without waiting ``linger_ms`` (what Java's ``flush()``
    does). Partitions are chosen as ``send`` would choose them (the same partitioner over the
    same metadata), so a key lands where its single publishes land. One outcome per record."""
    outcomes: list[_Failure | None] = [None] * len(records)
    chains: dict[tuple[str, int], list[Any]] = {}  # aiokafka BatchBuilders
    placed: list[tuple[str, int, int] | None] = []
    partitions: dict[str, tuple[list[int], list[int]] | _Failure] = {}
    by_key: dict[tuple[str, bytes], int] = {}
    for i, (topic, key, value, headers) in enumerate(records):
        partition = by_key.get((topic, key)) if key is not None else None
        if partition is None:
            known = partitions.get(topic)
            if known is None:
                try:
                    async with asyncio.timeout_at(deadline):
                        known = await _partitions(producer, topic)
                except Exception as exc:  # no metadata in time: the topic's records wait
                    known = _not_queued(exc)
                partitions[topic] = known
            if isinstance(known, _Failure):
                outcomes[i] = known
                placed.append(None)
                continue
            partition = _PARTITIONER(key, *known)
            if key is not None:
                by_key[topic, key] = partition
        chain = chains.setdefault((topic, partition), [])
        last = chain[-1] if chain else None
        if (
            last is None
            or last.append(key=key, value=value, timestamp=None, headers=headers) is None
        ):
            # no batch yet, or the last one is full: a new one takes the record
            builder = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None, headers=headers)
            chain.append(builder)
        placed.append((topic, partition, len(chain) - 1))
    deliveries: dict[tuple[str, int, int], asyncio.Future[Any] | _Failure] = {}
    for (topic, partition), chain in chains.items():
        stopped: _Failure | None = None  # a batch not queued: the ones after it wait too
        for n, builder in enumerate(chain):
            builder.close()
            if stopped is None:
                try:
                    async with asyncio.timeout_at(deadline):
                        delivery = await producer.send_batch(builder, topic, partition=partition)
                except Exception as exc:
                    stopped = _not_queued(exc)
                else:
                    delivery.add_done_callback(_retrieve)
                    deliveries[topic, partition, n] = delivery
                    continue
            deliveries[topic, partition, n] = stopped
    ends: dict[tuple[str, int, int], _Failure | None] = {}
    for chained, delivery in deliveries.items():
        ends[chained] = (
            delivery if isinstance(delivery, _Failure) else await _delivered(delivery, deadline)
        )
    for i, where in enumerate(placed):
        if where is not None:
            outcomes[i] = ends[where]
    return outcomes


async def _partitions(producer: AIOKafkaProducer, topic: str) -> tuple[list[int], list[int]]:
    """(all, available) partitions of ``topic``, listed the way ``send`` lists them."""
    cluster = producer.client.cluster
    if cluster.partitions_for_topic(topic) is None:
        await producer.partitions_for(topic)  # waits for the topic's metadata
    every = list(cluster.partitions_for_topic(topic) or ())
    available = list(cluster.available_partitions_for_topic(topic) or ())
    return every, available
