"""The one table from Slurm job states to jobgate states.

A Slurm state maps to ``None`` while the job is still on its way: QUEUED while it waits
for resources (pending, held, requeued), RUNNING from the moment a node has it. A final
Slurm state maps to a final job state and a sentence for the user. The result file the
node runner writes is more precise than COMPLETED/FAILED (it has every executor's exit
code), so for those two the table only says what to report when that file is missing.
"""

from __future__ import annotations

from jobgate.backends.batch.scheduler import StateRow
from jobgate.domain.states import State

SlurmState = StateRow

_ACTIVE = "waiting or running in Slurm"

TABLE: dict[str, SlurmState] = {
    # Active: the job is on its way.
    "PENDING": SlurmState(None, "pending in the Slurm queue", queued=True),
    "CONFIGURING": SlurmState(None, "Slurm is configuring its nodes", queued=True),
    "RUNNING": SlurmState(None, "running on a Slurm node"),
    "COMPLETING": SlurmState(None, "finishing on a Slurm node", trust_result=True),
    "SUSPENDED": SlurmState(None, "suspended by Slurm"),
    "STOPPED": SlurmState(None, "stopped by Slurm (SIGSTOP)"),
    "REQUEUED": SlurmState(None, "requeued by Slurm", queued=True),
    "REQUEUE_FED": SlurmState(None, "requeued by Slurm (federation)", queued=True),
    "REQUEUE_HOLD": SlurmState(None, "requeued and held by Slurm", queued=True),
    "RESIZING": SlurmState(None, "being resized by Slurm"),
    "SIGNALING": SlurmState(None, "being signaled by Slurm"),
    "STAGE_OUT": SlurmState(None, "staging out in Slurm"),
    "RESV_DEL_HOLD": SlurmState(None, "held by Slurm (reservation deleted)", queued=True),
    "POWER_UP_NODE": SlurmState(None, "waiting for Slurm to power up a node", queued=True),
    # Final.
    "COMPLETED": SlurmState(
        State.SYSTEM_ERROR, "the batch job ended without a result file", trust_result=True
    ),
    "FAILED": SlurmState(
        State.SYSTEM_ERROR, "the batch job failed before the task could run", trust_result=True
    ),
    "TIMEOUT": SlurmState(State.EXECUTOR_ERROR, "the task exceeded its Slurm time limit"),
    "OUT_OF_MEMORY": SlurmState(State.EXECUTOR_ERROR, "the task exceeded its memory limit"),
    "DEADLINE": SlurmState(State.SYSTEM_ERROR, "the job reached its Slurm deadline"),
    "NODE_FAIL": SlurmState(State.SYSTEM_ERROR, "a Slurm node running the task failed"),
    "BOOT_FAIL": SlurmState(State.SYSTEM_ERROR, "a Slurm node failed to boot for the task"),
    "PREEMPTED": SlurmState(State.PREEMPTED, "Slurm preempted the task"),
    "CANCELLED": SlurmState(State.CANCELED, "the task was canceled in Slurm"),
    "SPECIAL_EXIT": SlurmState(State.SYSTEM_ERROR, "Slurm held the job after a special exit"),
    "REVOKED": SlurmState(State.SYSTEM_ERROR, "Slurm revoked the job (federation)"),
}


def lookup(slurm_state: str) -> SlurmState:
    """The table row for ``slurm_state``; unknown states count as active (never lose a job
    because a newer Slurm invented a state name), with the name in the detail."""
    # squeue prints e.g. "CANCELLED by 0" for cancels in some versions: the first word counts.
    key = slurm_state.split()[0].upper() if slurm_state.strip() else ""
    row = TABLE.get(key)
    if row is not None:
        return row
    return SlurmState(None, f"in Slurm state {slurm_state or '?'} ({_ACTIVE})")
