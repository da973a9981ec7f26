"""Failure lines stay one readable line: a huge exception message is cut, with its length."""

from __future__ import annotations

import logging

import pytest

from dotmac.events.engine.failure_log import MAX_ERROR_CHARS, FailureLog


def test_a_huge_error_message_is_cut_in_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog("orders", "billing")
    error = ValueError("x" * 10_000)
    with caplog.at_level(logging.WARNING, logger="dotmac.events"):
        log.retrying(1, 0.5, error)
        log.dead_lettered(2, "orders.DLQ", error)
    assert len(caplog.records) == 2
    for record in caplog.records:
        line = record.getMessage()
        assert len(line) < MAX_ERROR_CHARS + 200
        assert f"({len(repr(error))} chars)" in line


def test_a_short_error_is_shown_whole(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dotmac.events"):
        FailureLog("orders", "billing").retrying(1, 0.5, ValueError("card declined"))
    assert caplog.records[0].getMessage().endswith("ValueError('card declined')")
