"""The commit arithmetic: only contiguous finished offsets are committed, per partition."""

from __future__ import annotations

from dotmac.events.adapters.kafka.ledger import PartitionLedger, SlotState


def _ledger(offsets: range) -> PartitionLedger:
    ledger = PartitionLedger(0)
    for offset in offsets:
        assert ledger.add(offset, b"x", None) is not None
    return ledger


def test_running_offset_holds_the_commit_back() -> None:
    ledger = _ledger(range(5, 10))
    assert ledger.to_commit() == 5
    ledger.committed = 5
    assert ledger.done(6) and ledger.done(7)
    assert ledger.to_commit() is None  # 5 still running: stays at 5
    assert ledger.done(5)
    assert ledger.to_commit() == 8
    ledger.committed = 8
    assert ledger.done(8) and ledger.done(9)
    assert ledger.to_commit() == 10
    assert len(ledger) == 0


def test_failed_offset_is_never_skipped() -> None:
    ledger = _ledger(range(0, 4))
    ledger.committed = 0
    for offset in (1, 2, 3):
        ledger.done(offset)
    again = ledger.again(0)  # the handler failed; it is handed out again
    assert again is not None and again.count == 2
    assert ledger.to_commit() is None
    assert ledger.in_flight() == 1
    ledger.done(0)
    assert ledger.to_commit() == 4


def test_gaps_in_offsets_are_fine() -> None:
    ledger = PartitionLedger(1)
    for offset in (3, 7, 8):  # compacted topic or transaction markers
        ledger.add(offset, b"", None)
    ledger.done(7)
    ledger.done(8)
    assert ledger.to_commit() == 3
    ledger.done(3)
    assert ledger.to_commit() == 9


def test_acking_twice_or_unknown_is_harmless() -> None:
    ledger = _ledger(range(0, 2))
    assert ledger.done(0)
    assert not ledger.done(0)
    assert not ledger.done(42)
    assert not ledger.done(None)
    assert ledger.again(0) is None  # done stays done


def test_repeated_fetch_of_old_offsets_is_ignored() -> None:
    ledger = _ledger(range(0, 3))
    assert ledger.add(1, b"again", None) is None
    assert len(ledger) == 3


def test_release_and_take_back() -> None:
    ledger = _ledger(range(0, 3))
    slot = ledger.release(1)
    assert slot is not None and slot.state is SlotState.RELEASED
    assert ledger.in_flight() == 2
    assert [s.offset for s in ledger.released()] == [1]
    assert ledger.release(1) is None  # only handed-out offsets can be released
    back = ledger.again(1)
    assert back is not None and back.count == 2 and ledger.in_flight() == 3


def test_done_slots_drop_their_bytes() -> None:
    ledger = _ledger(range(0, 2))
    ledger.done(1)
    slot = ledger.get(1)
    assert slot is not None and slot.data is None
