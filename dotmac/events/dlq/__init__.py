"""Dead letters: the original record plus failure headers any client can read, a typed view of
them (:class:`DLQEntry`), consuming them in a group (``create_dlq_consumer``) and operating a
dead-letter topic without consuming it (:class:`DeadLetters`: count, list, show, replay, purge).

The header names and what each holds are in :mod:`dotmac.events.dlq.headers`.
"""

from __future__ import annotations

from dotmac.events.dlq.consumer import (
    DLQHandler,
    alert_on_dlq_entry,
    create_dlq_consumer,
    log_dlq_entry,
)
from dotmac.events.dlq.entry import DLQ_HEADER, DLQEntry
from dotmac.events.dlq.operations import DeadLetters, ReplayReport, SimpleDLQ, replay_marker_topic

__all__ = [
    "DLQ_HEADER",
    "DLQEntry",
    "DLQHandler",
    "DeadLetters",
    "ReplayReport",
    "SimpleDLQ",
    "alert_on_dlq_entry",
    "create_dlq_consumer",
    "log_dlq_entry",
    "replay_marker_topic",
]
