"""The job state machine: the TES v1.1 states and the one table of allowed transitions.

The store applies this table, and only the store (compare-and-set on the current state).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    CANCELING = "CANCELING"
    PREEMPTED = "PREEMPTED"


FINAL: frozenset[State] = frozenset(
    {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED, State.PREEMPTED}
)
"""States a job never leaves by itself."""

ACTIVE: frozenset[State] = frozenset({State.INITIALIZING, State.RUNNING, State.CANCELING})
"""States in which the dispatcher owns the job (it must be recovered after a restart);
so does it a QUEUED job that a backend holds (one with a native id)."""

_S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    # A QUEUED job is either in the gateway's queue (no native id: claimed → INITIALIZING)
    # or in its backend's queue (a native id: it starts RUNNING; it never completes
    # without having run, so one seen only once it ended passes through RUNNING).
    _S.QUEUED: frozenset(
        {
            _S.INITIALIZING,
            _S.RUNNING,
            _S.CANCELING,
            _S.CANCELED,
            _S.SYSTEM_ERROR,
            _S.PAUSED,
        }
    ),
    _S.PAUSED: frozenset({_S.QUEUED, _S.CANCELED}),
    # → QUEUED: a task interrupted by a gateway restart is run again (recovery), one a
    # backend queues, or one waiting after a transient submit error.
    _S.INITIALIZING: frozenset(
        {_S.RUNNING, _S.QUEUED, _S.CANCELING, _S.CANCELED, _S.SYSTEM_ERROR, _S.EXECUTOR_ERROR}
    ),
    _S.RUNNING: frozenset(
        {
            _S.COMPLETE,
            _S.EXECUTOR_ERROR,
            _S.SYSTEM_ERROR,
            _S.CANCELING,
            _S.CANCELED,
            _S.PREEMPTED,
            _S.QUEUED,
        }
    ),
    _S.CANCELING: frozenset({_S.CANCELED}),
    _S.UNKNOWN: frozenset({_S.QUEUED, _S.SYSTEM_ERROR, _S.CANCELED}),
    _S.COMPLETE: frozenset(),
    # Final states are left only by an explicit reschedule (native API), never by the engine.
    _S.EXECUTOR_ERROR: frozenset({_S.QUEUED}),
    _S.SYSTEM_ERROR: frozenset({_S.QUEUED}),
    _S.CANCELED: frozenset({_S.QUEUED}),
    _S.PREEMPTED: frozenset({_S.QUEUED}),
}

RESCHEDULABLE: frozenset[State] = frozenset(
    {State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED, State.PREEMPTED}
)
"""Final states from which a job may be run again (a failed or canceled job)."""


class IllegalTransition(ValueError):
    """A caller asked for a transition the table does not allow (a programming error)."""


def check_transition(src: State, dst: State) -> None:
    """Raise :class:`IllegalTransition` unless ``src → dst`` is in :data:`TRANSITIONS`."""
    if dst not in TRANSITIONS[src]:
        raise IllegalTransition(f"{src} → {dst} is not an allowed transition")


def sources_of(dst: State, among: frozenset[State] | set[State]) -> list[State]:
    """Those of ``among`` from which the table allows a move to ``dst``."""
    return [s for s in among if dst in TRANSITIONS[s]]
