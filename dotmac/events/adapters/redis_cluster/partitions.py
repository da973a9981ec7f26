"""Where a topic's partitions live: stream keys whose hash tags spread them over the slots.

Partition ``p`` of topic ``t`` is the stream ``{prefix}{t/p}`` (or ``{prefix}{t/p.n}``): Redis
Cluster hashes only the part between the braces, so everything kept beside a partition (the
group's held-time hash, the delayed-event set) shares its slot and one Lua script may touch them
together. Left to chance, 16 tags would land unevenly on 3 masters (8/5/3 is common, an empty
master possible), so the tag is chosen: ``n`` counts up from 0 until the tag's slot falls in
partition ``p``'s window, a 1/64 slice of the 16384 slots starting at the bit-reversed ``p``
(0, 1/2, 1/4, 3/4, 1/8...), shifted by a per-topic offset so that no master is every topic's
first. Any first ``P`` partitions are then spread evenly over the slot
range, so over masters that own equal ranges (as ``redis-cli --cluster create`` assigns them),
and partition ``p``'s key never depends on the partition count: growing a topic keeps every
existing stream and adds new ones in the gaps.

An event's partition is ``crc32(key) % P`` (zlib's CRC32, the same in every process and
language); events without a key go round-robin.
"""

from __future__ import annotations

import zlib

from redis.crc import key_slot

from dotmac.events.errors import ConfigurationError

__all__ = ["SLOTS", "PartitionMap", "partition_of", "partition_slot_window", "topic_of_key"]

SLOTS = 16384
_WINDOW = SLOTS // 64
_CACHED = 4096  # topics whose keys are kept; the cache restarts when full


def _reversed_fraction(p: int) -> float:
    """The van der Corput sequence: ``p``'s binary digits mirrored after the point."""
    result, weight = 0.0, 0.5
    while p:
        if p & 1:
            result += weight
        p >>= 1
        weight /= 2
    return result


def partition_slot_window(topic: str, p: int) -> range:
    """The slots partition ``p`` of ``topic`` is placed in (wrapping past the last slot)."""
    turn = zlib.crc32(topic.encode()) / 2**32  # each topic starts elsewhere: no master is first
    start = int((_reversed_fraction(p) + turn) % 1.0 * SLOTS)
    return range(start, start + _WINDOW)


def _in_window(slot: int, window: range) -> bool:
    return slot in window or slot + SLOTS in window


def _tag(topic: str, p: int) -> str:
    window = partition_slot_window(topic, p)
    n = 0
    while True:
        tag = f"{topic}/{p}" if n == 0 else f"{topic}/{p}.{n}"
        if _in_window(key_slot(tag.encode()), window):
            return tag
        n += 1


def check_topic(topic: str) -> None:
    """Raise ConfigurationError when ``topic`` cannot name partition streams."""
    if "{" in topic or "}" in topic:
        raise ConfigurationError(
            "topic", f"{topic!r}: '{{' and '}}' are not allowed on Redis Cluster (hash tags)"
        )


def partition_of(key: str | None, partitions: int, turn: int) -> int:
    """The partition of an event with ``key`` (``turn`` places events without one)."""
    if key is None:
        return turn % partitions
    return zlib.crc32(key.encode()) % partitions


def topic_of_key(prefix: str, key: str) -> tuple[str, int] | None:
    """``(topic, partition)`` of a partition stream key, or None when it is not one of ours."""
    if not key.startswith(prefix + "{") or not key.endswith("}"):
        return None
    topic, slash, rest = key[len(prefix) + 1 : -1].rpartition("/")
    number = rest.partition(".")[0]
    if not slash or not topic or not number.isdigit():
        return None
    return topic, int(number)


class PartitionMap:
    """Stream keys of each topic's partitions under one key prefix (computed once per topic)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._keys: dict[str, list[str]] = {}

    def streams(self, topic: str, partitions: int) -> list[str]:
        """The stream keys of ``topic``'s partitions 0..partitions-1."""
        keys = self._keys.get(topic)
        if keys is None:
            check_topic(topic)
            if len(self._keys) >= _CACHED:
                self._keys.clear()
            keys = self._keys[topic] = []
        while len(keys) < partitions:
            keys.append(f"{self.prefix}{{{_tag(topic, len(keys))}}}")
        return keys[:partitions]

    def delayed_key(self, stream: str) -> str:
        """The sorted set of a partition's delayed events, in its stream's slot."""
        return f"{stream}:delayed"
