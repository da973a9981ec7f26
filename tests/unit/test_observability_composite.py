"""CompositeObserver nests its observers as contextlib.ExitStack would, and skips the shared
no-ops that observers return when they have nothing to do."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn

import pytest

from dotmac.events import Event
from dotmac.events.observability import CompositeObserver, LoggingObserver, NoopObserver
from dotmac.events.observability.observer import NOTHING_TO_CONSUME


class Recording(NoopObserver):
    def __init__(self, name: str, log: list[str], headers: Mapping[str, str] | None = None):
        self.name = name
        self.log = log
        self.headers = headers or {}

    @contextmanager
    def publishing(self, event: Event, *, adapter: str) -> Iterator[Mapping[str, str]]:
        self.log.append(f"{self.name} enter")
        try:
            yield self.headers
        except BaseException as exc:
            self.log.append(f"{self.name} exit {type(exc).__name__}")
            raise
        self.log.append(f"{self.name} exit")

    @contextmanager
    def consuming(self, event: Event, *, group: str, adapter: str) -> Iterator[None]:
        self.log.append(f"{self.name} made")
        self.log.append(f"{self.name} enter")
        try:
            yield
        except BaseException as exc:
            self.log.append(f"{self.name} exit {type(exc).__name__}")
            raise
        self.log.append(f"{self.name} exit")


def test_enters_in_order_exits_in_reverse_and_merges_headers() -> None:
    log: list[str] = []
    composite = CompositeObserver(
        [
            Recording("a", log, {"traceparent": "x"}),
            NoopObserver(),
            Recording("b", log, {"k": "v"}),
        ]
    )
    with composite.publishing(Event("t", {}), adapter="memory") as headers:
        log.append("send")
    assert headers == {"traceparent": "x", "k": "v"}
    assert log == ["a enter", "b enter", "send", "b exit", "a exit"]


def test_each_observer_is_asked_once_the_one_before_is_entered() -> None:
    log: list[str] = []
    composite = CompositeObserver([Recording("a", log), Recording("b", log)])
    manager = composite.consuming(Event("t", {}), group="g", adapter="memory")
    assert log == []
    with pytest.raises(KeyError), manager:
        raise KeyError("handler")
    assert log == [
        "a made",
        "a enter",
        "b made",
        "b enter",
        "b exit KeyError",
        "a exit KeyError",
    ]


def test_a_failing_enter_unwinds_what_was_entered() -> None:
    log: list[str] = []

    class Broken(NoopObserver):
        def consuming(self, event: Event, *, group: str, adapter: str) -> NoReturn:
            raise RuntimeError("observer bug")

    composite = CompositeObserver([Recording("a", log), Broken()])
    with pytest.raises(RuntimeError), composite.consuming(Event("t", {}), group="g", adapter="m"):
        log.append("handler")  # never runs
    assert log == ["a made", "a enter", "a exit RuntimeError"]


def test_logging_without_debug_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    observer = LoggingObserver(logging.getLogger("dotmac.events.test-composite"))
    with caplog.at_level(logging.INFO, logger="dotmac.events.test-composite"):
        assert observer.consuming(Event("t", {}), group="g", adapter="m") is NOTHING_TO_CONSUME
    with caplog.at_level(logging.DEBUG, logger="dotmac.events.test-composite"):
        with observer.consuming(Event("t", {}), group="g", adapter="m"):
            pass
    assert any("handled" in r.message for r in caplog.records)
