"""An app with module-level ``@event_handler`` functions: ``dotmac-events worker MODULE`` runs
them from the default registry. Records handled ids to ``WORKER_RECORD`` like worker_app."""

from __future__ import annotations

import os

from dotmac.events.event import Event
from dotmac.events.registry import event_handler

RECORD = os.environ.get("WORKER_RECORD", os.devnull)


@event_handler(os.environ.get("WORKER_TOPIC", "worker.jobs"), group="workers")
async def handle(event: Event) -> None:
    with open(RECORD, "a") as record:  # noqa: ASYNC230 (a small append, closed at once)
        record.write(f"{event.payload['n']}\n")
