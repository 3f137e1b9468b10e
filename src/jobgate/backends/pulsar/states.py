"""Pulsar's job states (``pulsar/managers/status.py``) onto jobgate's.

A ``complete`` job is COMPLETE or EXECUTOR_ERROR by its executors' exit codes, which the
backend reads from the job's result file; the other final states need no result.
"""

from __future__ import annotations

from jobgate.domain.states import State

STATE_MAP: dict[str, State] = {
    # Pulsar fetches the job's inputs itself (remote staging) before it queues it; a job
    # it was told of by message and has not launched yet says so too.
    "preprocessing": State.INITIALIZING,
    "queued": State.QUEUED,
    "running": State.RUNNING,
    # The command has ended and Pulsar collects its files: not final for the task yet.
    "postprocessing": State.RUNNING,
    "complete": State.COMPLETE,
    "failed": State.SYSTEM_ERROR,
    "lost": State.SYSTEM_ERROR,
    "cancelled": State.CANCELED,
}

ACTIVE = frozenset({"preprocessing", "queued", "running", "postprocessing"})
"""Pulsar states of a job that has not ended."""


def mapped(pulsar_state: str) -> State:
    """jobgate's state for ``pulsar_state`` (one Pulsar does not document: SYSTEM_ERROR)."""
    return STATE_MAP.get(pulsar_state, State.SYSTEM_ERROR)
