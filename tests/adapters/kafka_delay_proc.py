"""A process for the Kafka delay tests, killed with SIGKILL by them.

``python -m tests.adapters.kafka_delay_proc publish BOOTSTRAP PREFIX GROUP TOPIC SPEC OUT``
publishes the events of SPEC (JSON: ``[{"id", "key", "delay"}]``), appends ``published`` to
OUT once every publish returned, then waits to be killed: its mover may hold nothing yet.

``python -m tests.adapters.kafka_delay_proc move BOOTSTRAP PREFIX GROUP TOPIC - OUT``
subscribes to TOPIC (a topic nobody publishes to), which runs the bus's delay mover, appends
``ready`` to OUT and moves delayed events until killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from dotmac.events import Event
from dotmac.events.adapters.kafka import create_kafka_bus
from tests.support.kafka_helpers import kafka_test_config


async def main(mode: str, bootstrap: str, prefix: str, group: str, topic: str, spec: str) -> None:
    out = sys.argv[7]
    bus = create_kafka_bus(
        kafka_test_config(
            bootstrap, delay_topic_prefix=prefix, delay_group=group, pattern_refresh=0.5
        )
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if mode == "publish":
        for item in json.loads(spec):
            event = Event(topic, {"id": item["id"]}, key=item["key"])
            await bus.publish(event, delay=item["delay"])
        os.write(fd, b"published\n")
    else:

        async def nothing(event: Event) -> None:
            return None

        await bus.subscribe(topic, nothing, group="idle")
        os.write(fd, b"ready\n")
    os.fsync(fd)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
