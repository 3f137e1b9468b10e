"""The one table from Grid Engine job states to jobgate states.

``qstat`` shows a job only while it is in Grid Engine's hands, as a combination of letters:
``q`` queued, ``w`` waiting, ``h`` hold, ``E`` error, ``R`` restarted/rescheduled,
``t`` transferring to the exec host, ``r`` running, ``s`` suspended (qmod), ``S`` suspended
by a subordinate queue, ``T`` suspended by a load threshold, ``d`` deletion requested.

Every such state is *active*: the row's ``state`` is None and ``active`` says whether the
job still waits (QUEUED: ``qw``, ``hqw``, ``Eqw``…) or has started (RUNNING: ``t``, ``r``,
suspended ones). A hold or an error state leaves the job QUEUED, with the reason in ``why``
(an ``Eqw`` job stays there until an operator clears it with ``qmod -cj``). ``d`` marks a
qdel in progress (``canceling``).

There are no final states here: a job that ended is simply gone from qstat (Grid Engine
keeps no finished jobs there; ``qacct`` has them only where accounting is on, and after a
delay). The node runner's result file decides how it ended; a job gone without one is
reported from ``qacct`` or as lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobgate.domain.states import State


@dataclass(frozen=True, slots=True)
class GridEngineState:
    state: State | None
    """A final job state; always None for what qstat shows (Grid Engine lists no
    finished jobs)."""
    why: str
    """What is happening, for the status detail."""
    active: State
    """QUEUED while the job waits in Grid Engine's queue, RUNNING once it has started."""
    canceling: bool = False
    """A qdel was accepted and Grid Engine is removing the job."""
    trust_result: bool = False
    """Whether a clean result file written by the node runner decides instead (the job
    is ending: its result may already be there)."""


_Q, _R = State.QUEUED, State.RUNNING
_CLEAR = "qmod -cj to clear"


def _row(active: State, why: str, **kw: bool) -> GridEngineState:
    return GridEngineState(None, why, active, **kw)


TABLE: dict[str, GridEngineState] = {
    # Waiting in the queue.
    "qw": _row(_Q, "waiting in the Grid Engine queue"),
    "hqw": _row(_Q, "held in the Grid Engine queue (qrls releases it)"),
    "Rq": _row(_Q, "rescheduled, waiting in the Grid Engine queue"),
    "Rqw": _row(_Q, "rescheduled, waiting in the Grid Engine queue"),
    "hRqw": _row(_Q, "rescheduled and held in the Grid Engine queue"),
    "hRwq": _row(_Q, "rescheduled and held in the Grid Engine queue"),
    "Eqw": _row(_Q, f"in Grid Engine error state E ({_CLEAR})"),
    "Ehqw": _row(_Q, f"held and in Grid Engine error state E ({_CLEAR})"),
    "EhRqw": _row(_Q, f"rescheduled, held and in Grid Engine error state E ({_CLEAR})"),
    "ERqw": _row(_Q, f"rescheduled and in Grid Engine error state E ({_CLEAR})"),
    # Started: on its way to, or on, an exec host.
    "t": _row(_R, "being transferred to a Grid Engine exec host"),
    "Rt": _row(_R, "restarted, being transferred to a Grid Engine exec host"),
    "r": _row(_R, "running on a Grid Engine exec host"),
    "Rr": _row(_R, "restarted, running on a Grid Engine exec host"),
    "hr": _row(_R, "running on a Grid Engine exec host (a hold applies to later runs)"),
    "hRr": _row(_R, "restarted, running (a hold applies to later runs)"),
    "s": _row(_R, "suspended in Grid Engine (qmod -usj resumes it)"),
    "Rs": _row(_R, "restarted, suspended in Grid Engine"),
    "ts": _row(_R, "suspended in Grid Engine while being transferred"),
    "S": _row(_R, "suspended by Grid Engine (subordinate queue)"),
    "RS": _row(_R, "restarted, suspended by Grid Engine (subordinate queue)"),
    "tS": _row(_R, "suspended by Grid Engine (subordinate queue) while being transferred"),
    "T": _row(_R, "suspended by Grid Engine (queue load threshold)"),
    "RT": _row(_R, "restarted, suspended by Grid Engine (queue load threshold)"),
    "tT": _row(_R, "suspended by Grid Engine (load threshold) while being transferred"),
    # Deleted (qdel accepted, Grid Engine is removing the job).
    "dqw": _row(_Q, "being deleted from the Grid Engine queue", canceling=True),
    "dhqw": _row(_Q, "being deleted from the Grid Engine queue", canceling=True),
    "dEqw": _row(_Q, "being deleted from the Grid Engine queue", canceling=True),
    "dt": _row(_R, "being deleted in Grid Engine", canceling=True, trust_result=True),
    "dRt": _row(_R, "being deleted in Grid Engine", canceling=True, trust_result=True),
    "dr": _row(_R, "being deleted in Grid Engine", canceling=True, trust_result=True),
    "dRr": _row(_R, "being deleted in Grid Engine", canceling=True, trust_result=True),
    "ds": _row(_R, "being deleted in Grid Engine", canceling=True, trust_result=True),
    "dS": _row(_R, "being deleted in Grid Engine", canceling=True, trust_result=True),
    "dT": _row(_R, "being deleted in Grid Engine", canceling=True, trust_result=True),
}

_STARTED = frozenset("trsST")


def lookup(ge_state: str) -> GridEngineState:
    """The table row for ``ge_state``; other combinations of the letters are read letter
    by letter (never lose a job over a combination the table lacks), with the letters in
    the detail."""
    key = ge_state.strip()
    row = TABLE.get(key)
    if row is not None:
        return row
    letters = set(key)
    active = _R if letters & _STARTED else _Q
    parts = []
    if "d" in letters:
        parts.append("being deleted")
    if "E" in letters:
        parts.append(f"in error state E ({_CLEAR})")
    if "h" in letters:
        parts.append("held")
    if letters & {"s", "S", "T"}:
        parts.append("suspended")
    if not parts:
        parts.append("running" if active is _R else "waiting")
    why = f"{', '.join(parts)} in Grid Engine (state {key or '?'})"
    canceling = "d" in letters
    return GridEngineState(
        None, why, active, canceling=canceling, trust_result=canceling and active is _R
    )


# -- after the job: qacct ------------------------------------------------------------------

# qacct's "failed" codes (sge_status(5) of Grid Engine 8.1): where in the exec host's steps
# a job failed. Codes below 37 are failures before or around the job script itself.
_FAILED_EARLY = {
    1: "before the job started",
    7: "before the prolog",
    8: "in the prolog",
    10: "in the parallel environment's start procedure",
    11: "before the job started",
    26: "opening its output file",
    27: "finding its shell",
    28: "changing to its working directory",
}


def accounting(failed: int, failed_reason: str, exit_status: int) -> tuple[State, str]:
    """The final state and a sentence for a job that left qstat **without** a result file,
    from its ``qacct`` record (see ``parse.qacct_records``)."""
    said = f"qacct: failed {failed}" + (f" ({failed_reason})" if failed_reason else "")
    said += f", exit status {exit_status}"
    if failed == 37:
        return (
            State.EXECUTOR_ERROR,
            f"the task exceeded its Grid Engine limit (h_rt, h_cpu or h_vmem); {said}",
        )
    if failed == 100 or (failed == 0 and exit_status > 128):
        return (
            State.SYSTEM_ERROR,
            f"the job was killed by a signal ({exit_status - 128 if exit_status > 128 else '?'}):"
            f" qdel, a limit or the exec host; {said}",
        )
    if failed != 0:
        where = _FAILED_EARLY.get(failed, "on the exec host")
        return State.SYSTEM_ERROR, f"Grid Engine failed the job {where}; {said}"
    return State.SYSTEM_ERROR, f"the batch job ended without a result file; {said}"
