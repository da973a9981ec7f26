"""In-process transport that behaves like a broker: a log per topic and a cursor per group.

Each topic is an append-only log. Each consumer group has a cursor (the next offset to hand out),
a pending table (offset -> delivery count) of messages handed out and not acked, and a queue of
messages given back by consumers that closed. So it has the full bus contract: fan-out across
groups, competing consumers within one, redelivery with a count, and unacked messages surviving
a consumer's close. Entries every group has acked are trimmed, unless persistence keeps history.

Costs, since this is also the bus under every handler test and small app:

* The log is two lists (encoded bytes, key) and an array of append times indexed by offset, so
  a held event costs its bytes object, its key string, two pointer slots and a float (~26 B):
  no object or dict per entry. Trimming blanks slots and cuts the blank head off once it is
  half the list, so reads stay O(1). The times let ``bus.read`` start at a moment (bisection).
* Every group keeps its floor (the lowest offset it still needs) as acks arrive, from a heap of
  the offsets it handed out; the topic keeps the lowest floor of its groups. Publish checks room
  with one subtraction, and an ack trims only what it freed, instead of scanning the pending
  tables of every group on every publish and ack.
* A publish with room appends and returns without awaiting anything. Publishers that find the
  topic full queue in order and are woken one per freed slot (the slot is kept for them), never
  all at once to race for it; one timer per topic enforces their ``publish_timeout``.
* A publish wakes one sleeping receiver per group, and only when one sleeps; a receiver that
  leaves work behind wakes the next.
"""

from dotmac.events.adapters.memory.bus import MemoryBus, create_memory_bus
from dotmac.events.adapters.memory.config import MemoryConfig

__all__ = ["MemoryBus", "MemoryConfig", "create_memory_bus"]
