"""The psik_api 1.0 dialect: its job description, job states and status rows, and the map
between its states and jobgate's.

psik (the Portable Submission Interface for Jobs) keeps, per job, a status history of rows
``(time, jobndx, state, info)``: ``new`` with jobndx 0 when the job is created, then
``queued``, ``active`` and one of ``completed``/``failed`` for each submission (jobndx 1, 2,
… — a job submitted again gets the next one), and ``canceled`` with jobndx 0. jobgate's
event history is turned into those rows by :func:`history`; the map of states is
:data:`PSIK_STATE` (each jobgate state to one psik state) and :data:`JOBGATE_STATES` (each
psik state to the jobgate states shown as it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from jobgate.domain import limits as lim
from jobgate.domain.models import JobEvent, JobRecord
from jobgate.domain.states import FINAL, State


class PsikState(StrEnum):
    new = "new"
    queued = "queued"
    active = "active"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


PSIK_STATE: dict[State, PsikState] = {
    State.PAUSED: PsikState.new,
    State.UNKNOWN: PsikState.queued,
    State.QUEUED: PsikState.queued,
    State.INITIALIZING: PsikState.queued,
    State.RUNNING: PsikState.active,
    State.COMPLETE: PsikState.completed,
    State.EXECUTOR_ERROR: PsikState.failed,
    State.SYSTEM_ERROR: PsikState.failed,
    State.PREEMPTED: PsikState.failed,
    # psik records ``canceled`` as soon as a cancel is asked for, before the kill.
    State.CANCELING: PsikState.canceled,
    State.CANCELED: PsikState.canceled,
}
"""The psik state a job in each jobgate state is shown in."""

JOBGATE_STATES: dict[PsikState, frozenset[State]] = {
    psik: frozenset(s for s, p in PSIK_STATE.items() if p == psik) for psik in PsikState
}
"""The jobgate states each psik state stands for (a listing's ``state`` filter)."""


class _Psik(BaseModel):
    # As psik's own models: unknown fields are ignored.
    model_config = ConfigDict(extra="ignore")


class PsikResources(_Psik):
    duration: lim.Int = Field(default=10, ge=1, le=10**7, title="Max walltime in minutes")
    node_count: lim.Int | None = Field(default=None, ge=1, le=10**6)
    process_count: lim.Int | None = Field(default=None, ge=1, le=lim.CPU_CORES)
    processes_per_node: lim.Int | None = Field(default=None, ge=1, le=lim.CPU_CORES)
    cpu_cores_per_process: lim.Int = Field(default=1, ge=1, le=lim.CPU_CORES)
    gpu_cores_per_process: lim.Int = Field(default=0, ge=0, le=10**6)
    exclusive_node_use: bool = True

    @property
    def processes(self) -> int:
        """Process instances: ``process_count``, else nodes times processes per node, else 1."""
        if self.process_count is not None:
            return self.process_count
        if self.node_count is not None and self.processes_per_node is not None:
            return self.node_count * self.processes_per_node
        return 1


class PsikBackendConfig(_Psik):
    type: str = Field(default="local", max_length=lim.BACKEND_NAME)
    queue_name: str | None = Field(default=None, max_length=lim.BACKEND_PARAMETER_VALUE)
    project_name: str | None = Field(default=None, max_length=lim.BACKEND_PARAMETER_VALUE)
    reservation_id: str | None = Field(default=None, max_length=lim.BACKEND_PARAMETER_VALUE)
    attributes: dict[str, str] = Field(default_factory=dict, max_length=lim.BACKEND_PARAMETERS)


class PsikJobSpec(_Psik):
    """psik's ``JobSpec``: what ``POST /jobs`` and ``POST /jobs/new`` take."""

    name: lim.Name | None = None
    directory: str | None = Field(default=None, max_length=lim.PATH)
    script: str = Field(max_length=lim.ARG, title="Shell / shebang script to execute")
    environment: dict[str, str] = Field(default_factory=dict, max_length=lim.ENV)
    inherit_environment: bool = True
    resources: PsikResources = Field(default_factory=PsikResources)
    backend: PsikBackendConfig = Field(default_factory=PsikBackendConfig)
    callback: str | None = Field(default=None, max_length=lim.URL)
    cb_secret: SecretStr | None = Field(default=None, max_length=lim.TEXT)
    client_secret: SecretStr | None = Field(default=None, max_length=lim.TEXT)


class PsikStepInfo(_Psik):
    """One row of a job's status history, as psik_api answers it."""

    jobid: str
    name: str
    updated: float
    jobndx: int
    state: PsikState
    info: int


class PsikCallback(_Psik):
    """The body psik POSTs to a job's ``callback`` URL when the job reaches a state."""

    jobid: str
    jobndx: int
    state: PsikState
    info: int = 0


class PsikStatusValue(StrEnum):
    active = "active"
    unavailable = "unavailable"
    degraded = "degraded"
    other = "other"


class PsikSystemStatus(_Psik):
    """A psik backend, as ``GET /backends`` lists it."""

    name: str
    full_name: str | None = None
    description: str | None = None
    system_type: str | None = None
    notes: list[str] = Field(default_factory=list)
    status: PsikStatusValue
    updated_at: datetime | None = None


def jobndx(state: PsikState, reschedules: int) -> int:
    """The jobndx psik shows beside ``state``: 0 for new and canceled, else the submission."""
    return 0 if state in (PsikState.new, PsikState.canceled) else reschedules + 1


def current(rec: JobRecord) -> PsikStepInfo:
    """The last row of the job's history, from the record alone (no event read)."""
    state = PSIK_STATE[rec.state]
    return PsikStepInfo(
        jobid=rec.id,
        name=str(rec.spec.get("name") or ""),
        updated=(rec.updated_at or rec.created_at).timestamp(),
        jobndx=jobndx(state, rec.reschedules),
        state=state,
        info=0,
    )


def step(event: JobEvent) -> PsikState | None:
    """The psik state ``event`` adds a row for, or None when psik would see no change."""
    state = PSIK_STATE[event.to_state]
    if event.from_state is None:
        return None if state == PsikState.new else PsikState.queued
    rerun = event.from_state in FINAL and event.to_state == State.QUEUED
    if not rerun and PSIK_STATE[event.from_state] == state:
        return None
    return state


def history(rec: JobRecord, events: Iterable[JobEvent]) -> list[PsikStepInfo]:
    """The job's status rows, oldest first: ``new`` (jobndx 0) at creation, then a row per
    change of psik state; a rescheduled job's next submission has the next jobndx."""
    name = str(rec.spec.get("name") or "")
    rows: list[PsikStepInfo] = []
    submission = 0

    def add(at: float, ndx: int, state: PsikState) -> None:
        rows.append(
            PsikStepInfo(jobid=rec.id, name=name, updated=at, jobndx=ndx, state=state, info=0)
        )

    for event in events:
        at = event.at.timestamp()
        if event.from_state is None:
            add(at, 0, PsikState.new)
        state = step(event)
        if state is None:
            continue
        if state == PsikState.queued and (event.from_state is None or event.from_state in FINAL):
            submission += 1
        elif state == PsikState.queued and event.from_state == State.PAUSED:
            submission = max(submission, 1)
        add(at, 0 if state == PsikState.canceled else max(submission, 1), state)
    return rows
