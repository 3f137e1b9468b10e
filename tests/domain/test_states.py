"""The state table: what may follow what."""

from __future__ import annotations

import pytest

from jobgate.domain.states import FINAL, TRANSITIONS, IllegalTransition, State, check_transition


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)


def test_final_states_lead_only_back_to_the_queue() -> None:
    for s in FINAL:
        assert TRANSITIONS[s] <= {State.QUEUED}
    assert TRANSITIONS[State.COMPLETE] == frozenset()  # a success is never re-run


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("QUEUED", "INITIALIZING"),
        ("QUEUED", "CANCELED"),
        ("INITIALIZING", "RUNNING"),
        ("RUNNING", "COMPLETE"),
        ("RUNNING", "CANCELING"),
        ("CANCELING", "CANCELED"),
        ("RUNNING", "QUEUED"),  # recovery after a restart
        ("INITIALIZING", "QUEUED"),  # in the backend's queue, or waiting for the backend
        ("QUEUED", "RUNNING"),  # the backend's queue starts it
        ("QUEUED", "CANCELING"),  # a cancel must reach the backend's queue
    ],
)
def test_allowed(src: str, dst: str) -> None:
    check_transition(State(src), State(dst))


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("QUEUED", "COMPLETE"),  # a job never completes without having run
        ("QUEUED", "EXECUTOR_ERROR"),
        ("COMPLETE", "RUNNING"),
        ("COMPLETE", "QUEUED"),
        ("CANCELING", "COMPLETE"),  # once canceled, the user's word wins
        ("INITIALIZING", "COMPLETE"),
    ],
)
def test_forbidden(src: str, dst: str) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(State(src), State(dst))
