"""The app the worker tests run: ``dotmac-events worker tests.faults.worker_app:router``.

One slow handler that appends each handled event's id to ``WORKER_RECORD`` (one line per event,
written and closed before the handler returns: a line means "handled", acked or not), and a
``started <n>`` line to ``WORKER_STARTED`` as each call begins: another process can see which
handlers are running on any transport (Kafka's stats cannot see another process's in-flight
events).
"""

from __future__ import annotations

import asyncio
import os

from dotmac.events.event import Event
from dotmac.events.router import EventRouter

TOPIC = os.environ.get("WORKER_TOPIC", "worker.jobs")
GROUP = os.environ.get("WORKER_GROUP", "workers")
DELAY = float(os.environ.get("WORKER_DELAY", "0.01"))
CONCURRENCY = int(os.environ.get("WORKER_CONCURRENCY", "4"))
RECORD = os.environ.get("WORKER_RECORD", os.devnull)
STARTED = os.environ.get("WORKER_STARTED", os.devnull)

router = EventRouter()


@router.handler(TOPIC, group=GROUP, concurrency=CONCURRENCY)
async def handle(event: Event) -> None:
    with open(STARTED, "a") as started:  # noqa: ASYNC230 (a small append, closed at once)
        started.write(f"started {event.payload['n']}\n")
    await asyncio.sleep(DELAY)
    with open(RECORD, "a") as record:  # noqa: ASYNC230 (a small append, closed at once)
        record.write(f"{event.payload['n']}\n")


not_a_router = 42
