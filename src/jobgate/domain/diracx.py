"""DiracX's view of a job: its status names, its attribute names, its search bodies.

Status map (both ways; documented in the README's DiracX section):

=================  ==========================================
jobgate state      DiracX Status
=================  ==========================================
UNKNOWN, PAUSED    Received
QUEUED             Waiting
INITIALIZING       Matched
RUNNING            Running
CANCELING          Killed (MinorStatus says it is being killed)
COMPLETE           Done
EXECUTOR_ERROR,    Failed
SYSTEM_ERROR,
PREEMPTED
CANCELED           Killed
=================  ==========================================

A RUNNING job flagged stalled (no heartbeat within its timeout) shows as Stalled. A search
for a DiracX status means the jobgate states that show as it; DiracX statuses no jobgate
state has (Submitting, Checking, Staging, Stalled, Completing, Completed, Deleted,
Rescheduled) match nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobgate.domain import limits as lim
from jobgate.domain.states import State

DIRAC_STATUSES = (
    "Submitting",
    "Received",
    "Checking",
    "Staging",
    "Waiting",
    "Matched",
    "Running",
    "Stalled",
    "Completing",
    "Done",
    "Completed",
    "Failed",
    "Deleted",
    "Killed",
    "Rescheduled",
)

STATUS_OF: dict[State, str] = {
    State.UNKNOWN: "Received",
    State.PAUSED: "Received",
    State.QUEUED: "Waiting",
    State.INITIALIZING: "Matched",
    State.RUNNING: "Running",
    State.CANCELING: "Killed",
    State.COMPLETE: "Done",
    State.EXECUTOR_ERROR: "Failed",
    State.SYSTEM_ERROR: "Failed",
    State.PREEMPTED: "Failed",
    State.CANCELED: "Killed",
}
"""jobgate state → DiracX Status."""


def states_of(status: str) -> list[State]:
    """The jobgate states shown as DiracX ``status`` (none for a status jobgate never has)."""
    return [s for s, name in STATUS_OF.items() if name == status]


def minor_status(state: State, detail: str | None) -> str:
    """DiracX's MinorStatus of a job: jobgate's latest detail, or a word for the state."""
    if state == State.CANCELING:
        return "Marked for termination"
    return detail or {State.QUEUED: "Job accepted", State.PAUSED: "Job held"}.get(state, "")


# DiracX attributes that are jobgate columns; any other attribute is a job label.
COLUMN_OF: dict[str, str] = {
    "JobID": "seq",
    "Status": "state",
    "MinorStatus": "detail",
    "ApplicationStatus": "app_status",
    "Owner": "owner",
    "JobName": "name",
    "SubmissionTime": "created_at",
    "LastUpdateTime": "updated_at",
    "UserPriority": "priority",
    "RescheduleCounter": "reschedules",
}
LABELLED = ("JobGroup", "JobType", "Site", "OwnerGroup", "VO")
"""DiracX attributes kept as job labels, searchable and shown by default."""
DEFAULT_PARAMETERS = (
    "JobID",
    "JobName",
    "JobGroup",
    "JobType",
    "Site",
    "Owner",
    "OwnerGroup",
    "VO",
    "SubmissionTime",
    "LastUpdateTime",
    "StartExecTime",
    "EndExecTime",
    "Status",
    "MinorStatus",
    "ApplicationStatus",
    "UserPriority",
    "RescheduleCounter",
)
NAME = r"^[A-Za-z_][A-Za-z0-9_().]*$"

ScalarOp = Literal["eq", "neq", "gt", "lt", "like", "not like", "regex"]
VectorOp = Literal["in", "not in"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchSpec(_Body):
    """One condition: ``{parameter, operator, value}`` or ``{parameter, operator, values}``."""

    parameter: str = Field(max_length=lim.SEARCH_VALUE, pattern=NAME)
    operator: ScalarOp | VectorOp
    value: str | int | None = None
    values: list[str | int] | None = Field(default=None, max_length=lim.IN_VALUES)

    @field_validator("value")
    @classmethod
    def _short(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, str) and len(v) > lim.SEARCH_VALUE:
            raise ValueError(f"a value has at most {lim.SEARCH_VALUE} characters")
        return v

    @model_validator(mode="after")
    def _value_or_values(self) -> SearchSpec:
        vector = self.operator in ("in", "not in")
        if vector and self.values is None:
            raise ValueError(f"operator {self.operator!r} needs 'values' (a list)")
        if not vector and self.value is None:
            raise ValueError(f"operator {self.operator!r} needs 'value'")
        return self


class SortSpec(_Body):
    parameter: str = Field(max_length=lim.SEARCH_VALUE, pattern=NAME)
    direction: Literal["asc", "desc"] = "asc"


class SearchParams(_Body):
    """The body of ``POST /api/jobs/search``."""

    parameters: list[str] | None = Field(default=None, max_length=100)
    search: list[SearchSpec] = Field(default_factory=list, max_length=lim.FILTERS)
    sort: list[SortSpec] = Field(default_factory=list, max_length=3)
    distinct: bool = False


class SummaryParams(_Body):
    """The body of ``POST /api/jobs/summary``."""

    grouping: list[str] = Field(max_length=4)
    search: list[SearchSpec] = Field(default_factory=list, max_length=lim.FILTERS)
