"""Records with headers on Kafka (dead letters and their replays), and what Kafka can delete.

A record is written as it is: the given bytes, key and native record headers. Kafka cannot
delete one record: DeleteRecords only moves a partition's start offset forward, deleting
everything before it. So deleting every record a topic holds now works (the start offset of
each partition moves to its end offset; consumer groups keep their committed offsets), while
deleting chosen records raises UnsupportedOperation. Records also go when the topic's
``retention.ms`` passes. Tansu advertises DeleteRecords but closes the connection when asked,
so there even deleting everything fails (TransportError).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from dotmac.events.adapters.kafka.errors import kafka_errors
from dotmac.events.errors import UnsupportedOperation

__all__ = ["delete_before", "single_deletes_unsupported", "write_record"]


async def write_record(
    producer: AIOKafkaProducer,
    topic: str,
    data: bytes,
    key: str | None,
    headers: Sequence[tuple[str, bytes]],
) -> None:
    """Produce one record and wait for the broker's acknowledgement."""
    with kafka_errors(f"write to {topic!r}", publishing=True):
        delivery = await producer.send(
            topic, data, key=None if key is None else key.encode(), headers=list(headers)
        )
        await delivery


async def delete_before(admin: AIOKafkaAdminClient, ends: dict[TopicPartition, int]) -> None:
    """Delete every record before ``ends`` (per partition): DeleteRecords."""
    wanted = {tp: RecordsToDelete(before_offset=end) for tp, end in ends.items() if end > 0}
    if not wanted:
        return
    topics = sorted({tp.topic for tp in wanted})
    with kafka_errors(f"DeleteRecords on {topics} (a broker without it, as Tansu, drops the link)"):
        await admin.delete_records(wanted)


def single_deletes_unsupported() -> UnsupportedOperation:
    return UnsupportedOperation(
        "kafka cannot delete single records: DeleteRecords only deletes everything before an "
        "offset (purge the whole topic, or let retention.ms expire them)"
    )
