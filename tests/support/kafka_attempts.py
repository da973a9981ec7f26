"""Reading the Kafka bus's attempts topic as any client would, for tests of delivery counts."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from dotmac.events.adapters.kafka.attempts import decode_deliveries

__all__ = ["stored_counts"]


async def stored_counts(
    bootstrap: str, group_id: str, topic: str, attempts_topic: str = "_dotmac.attempts"
) -> list[tuple[int, dict[int, int]]]:
    """Every value written for ``topic``'s partitions in ``group_id``, oldest first, as
    ``(partition, {offset: deliveries})``: the topic as a raw client reads it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(attempts_topic)
        if partitions is None:
            await consumer.topics()  # refresh the metadata once
            partitions = consumer.partitions_for_topic(attempts_topic) or set()
        tps = [TopicPartition(attempts_topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        prefix = f"{group_id}|{topic}|"
        found: list[tuple[int, dict[int, int]]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    key = (record.key or b"").decode()
                    if key.startswith(prefix):
                        partition = int(key.rsplit("|", 1)[1])
                        found.append((partition, decode_deliveries(record.value)))
        return found
    finally:
        await consumer.stop()
