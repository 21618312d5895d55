"""The call state machine: every mapping, terminal is final, late events only fill gaps, repeats are
no-ops."""

from __future__ import annotations

import itertools

import pytest

from shared.enums import TERMINAL_STATUSES, CallStatus, Disposition, EventKind
from shared.lifecycle import (
    RANK,
    CallState,
    LifecycleEvent,
    advance,
    event_status,
    is_terminal,
    normalize_disposition,
)

S = CallStatus
K = EventKind


def su(status: str, at: int = 1000, **times: int) -> LifecycleEvent:
    return LifecycleEvent(kind=K.SESSION_UPDATE, occurred_ms=at, status=status, **times)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("new", S.RECEIVED),
        ("queued", S.QUEUED),
        ("processing", S.ROUTING),
        ("ringing", S.CONNECTING),
        ("external", S.CONNECTING),
        ("connected", S.CONNECTED),
        ("answer", S.COMPLETED),
        ("noanswer", S.NO_ANSWER),
        ("busy", S.BUSY),
        ("cancel", S.CANCELED),
        ("nocredit", S.FAILED),
        ("error", S.FAILED),
        ("answered", S.CONNECTED),
        ("completed", S.COMPLETED),
        ("failed", S.FAILED),
        ("no-answer", S.NO_ANSWER),
        ("NoAnswer", S.NO_ANSWER),
        ("ANSWER", S.COMPLETED),
        ("bogus", None),
    ],
)
def test_session_statuses(raw: str, expected: CallStatus | None) -> None:
    assert event_status(su(raw)) == expected


def test_answered_with_an_end_time_completes() -> None:
    assert event_status(su("answered", end_ms=5000)) is S.COMPLETED


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("completed", S.COMPLETED),
        ("answered", S.CONNECTED),
        ("busy", S.BUSY),
        ("no-answer", S.NO_ANSWER),
        ("noanswer", S.NO_ANSWER),
        ("failed", S.FAILED),
        ("canceled", S.CANCELED),
        ("unknown", S.FAILED),
        (None, S.FAILED),
    ],
)
def test_dial_statuses(raw: str | None, expected: CallStatus) -> None:
    event = LifecycleEvent(kind=K.DIAL_STATUS, occurred_ms=1, status=raw, outcome="ended")
    assert event_status(event) is expected


def test_a_dial_failure_that_tries_the_next_agent_is_still_connecting() -> None:
    event = LifecycleEvent(kind=K.DIAL_STATUS, occurred_ms=1, status="no-answer", outcome="routed")
    assert event_status(event) is S.CONNECTING


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [("routed", S.CONNECTING), ("outbound", S.CONNECTING), ("no_agent", S.FAILED), ("no_route", S.FAILED)],
)
def test_routing_outcomes(outcome: str, expected: CallStatus) -> None:
    assert event_status(LifecycleEvent(kind=K.ROUTED, occurred_ms=1, outcome=outcome)) is expected


@pytest.mark.parametrize(
    ("raw", "disposition", "status"),
    [
        ("ANSWER", Disposition.ANSWER, S.COMPLETED),
        ("ANSWERED", Disposition.ANSWER, S.COMPLETED),
        ("answered", Disposition.ANSWER, S.COMPLETED),
        ("BUSY", Disposition.BUSY, S.BUSY),
        ("CANCEL", Disposition.CANCEL, S.CANCELED),
        ("FAILED", Disposition.FAILED, S.FAILED),
        ("CONGESTION", Disposition.CONGESTION, S.FAILED),
        ("NOANSWER", Disposition.NOANSWER, S.NO_ANSWER),
        ("NO ANSWER", Disposition.NOANSWER, S.NO_ANSWER),
        (" no  answer ", Disposition.NOANSWER, S.NO_ANSWER),
    ],
)
def test_dispositions(raw: str, disposition: Disposition, status: CallStatus) -> None:
    assert normalize_disposition(raw) is disposition
    assert event_status(LifecycleEvent(kind=K.CDR, occurred_ms=1, disposition=raw)) is status


def test_unknown_dispositions() -> None:
    assert normalize_disposition("WHATEVER") is None
    assert normalize_disposition(None) is None
    assert normalize_disposition("") is None


def test_rejected_events_say_nothing() -> None:
    assert event_status(LifecycleEvent(kind=K.REJECTED, occurred_ms=1)) is None
    state = advance(
        CallState(status=S.CONNECTING, start_ms=1), LifecycleEvent(kind=K.REJECTED, occurred_ms=9)
    )
    assert state == CallState(status=S.CONNECTING, start_ms=1)


def test_terminal_states_are_never_left() -> None:
    later = [su(s) for s in ("new", "processing", "ringing", "connected", "answer", "busy")]
    for terminal in TERMINAL_STATUSES:
        assert is_terminal(terminal)
        for event in later:
            assert advance(CallState(status=terminal, start_ms=1, end_ms=2), event).status is terminal


def test_forward_only_in_any_order() -> None:
    events = [
        su("new", 1000, start_ms=900),
        su("processing", 2000, start_ms=900),
        su("ringing", 3000, start_ms=900),
        su("connected", 4000, start_ms=900, answer_ms=3900),
        su("answer", 9000, start_ms=900, answer_ms=3900, end_ms=8900),
    ]
    for order in itertools.permutations(events):
        state = CallState()
        for event in order:
            state = advance(state, event)
        assert state == CallState(status=S.COMPLETED, start_ms=900, answer_ms=3900, end_ms=8900)


def test_an_earlier_state_after_a_later_one_only_fills_missing_times() -> None:
    state = CallState(status=S.CONNECTED, start_ms=None, answer_ms=5000)
    after = advance(state, su("ringing", 7000, start_ms=1000, answer_ms=6000))
    assert after == CallState(status=S.CONNECTED, start_ms=1000, answer_ms=5000)


def test_times_not_given_come_from_when_the_engine_saw_the_event() -> None:
    state = advance(CallState(), LifecycleEvent(kind=K.ROUTED, occurred_ms=100, outcome="routed"))
    assert state == CallState(status=S.CONNECTING, start_ms=100)
    state = advance(state, su("connected", 200))
    assert state.answer_ms == 200
    state = advance(state, su("noanswer", 300))
    assert state == CallState(status=S.NO_ANSWER, start_ms=100, answer_ms=200, end_ms=300)


def test_the_cdr_times_win() -> None:
    state = CallState(status=S.COMPLETED, start_ms=100, answer_ms=200, end_ms=300)
    cdr = LifecycleEvent(
        kind=K.CDR, occurred_ms=999, disposition="ANSWER", start_ms=90, answer_ms=190, end_ms=290
    )
    assert advance(state, cdr) == CallState(status=S.COMPLETED, start_ms=90, answer_ms=190, end_ms=290)


def test_applying_the_same_event_twice_changes_nothing() -> None:
    events = [
        LifecycleEvent(kind=K.ROUTED, occurred_ms=100, outcome="routed"),
        su("ringing", 150, start_ms=90),
        su("connected", 200, start_ms=90, answer_ms=190),
        su("answer", 400, start_ms=90, answer_ms=190, end_ms=390),
        LifecycleEvent(kind=K.CDR, occurred_ms=500, disposition="ANSWERED", start_ms=90, end_ms=390),
    ]
    state = CallState()
    for event in events:
        once = advance(state, event)
        assert advance(once, event) == once
        state = once
    assert state.status is S.COMPLETED


def test_rank_covers_every_status() -> None:
    assert set(RANK) == set(CallStatus)
    assert all(RANK[t] > RANK[S.CONNECTED] for t in TERMINAL_STATUSES)
