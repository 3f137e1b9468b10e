"""What the client returns: typed views of the server's JSON.

Requests reuse the server's own models (:class:`~jobgate.domain.native.JobRequest`,
:class:`~jobgate.domain.models.TaskSpec`, :class:`~jobgate.domain.query.Filter`, …);
responses are parsed into the small models here. Unknown response fields are kept
(``extra="allow"``) so a newer server never breaks an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from jobgate.client.errors import BulkError, JobgateClientError, from_body
from jobgate.domain.models import ExecutorLog, TaskLog
from jobgate.domain.states import FINAL, State


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)


class Job(_Wire):
    """One job as the native API shows it (``GET /api/v1/jobs/{id}``)."""

    id: str
    state: State
    name: str | None = None
    owner: str | None = None
    backend: str | None = None
    group: str | None = None
    priority: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    detail: str | None = None
    app_status: str | None = None
    attempt: int = 0
    reschedules: int = 0
    spec: dict[str, Any] = Field(default_factory=dict)
    logs: list[TaskLog] = Field(default_factory=list)

    @field_validator("labels", "spec", "logs", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        # Search rows carry ``logs: null`` for a job that never ran (GET says ``[]``).
        if value is None:
            return [] if info.field_name == "logs" else {}
        return value

    @property
    def final(self) -> bool:
        """True once the job is in a state it never leaves by itself."""
        return self.state in FINAL

    @property
    def ok(self) -> bool:
        return self.state == State.COMPLETE

    def _executor_logs(self) -> list[ExecutorLog]:
        return self.logs[-1].logs if self.logs else []

    @property
    def exit_code(self) -> int | None:
        """The exit code of the last executor that ran in the latest attempt."""
        logs = self._executor_logs()
        return logs[-1].exit_code if logs else None

    @property
    def stdout(self) -> str:
        """The kept tail of stdout of the latest attempt, all executors in order."""
        return "".join(e.stdout or "" for e in self._executor_logs())

    @property
    def stderr(self) -> str:
        return "".join(e.stderr or "" for e in self._executor_logs())

    @property
    def system_logs(self) -> list[str]:
        return list(self.logs[-1].system_logs or []) if self.logs else []


class Event(_Wire):
    """One entry of a job's status history."""

    seq: int | None = None
    job_id: str
    at: datetime
    from_state: State | None = None
    state: State
    detail: str | None = None
    app_status: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One item of a bulk call, aligned with the input: an id and state, or an error."""

    index: int
    id: str | None = None
    state: State | None = None
    error: JobgateClientError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> BulkItem:
        error = item.get("error")
        state = item.get("state")
        return cls(
            index=int(item["index"]),
            id=item.get("id"),
            state=State(state) if state else None,
            error=from_body(error) if error is not None else None,
        )


class BulkResult(list[BulkItem]):
    """Per-item results of a bulk call, in input order; ``group`` for parametric sweeps."""

    group: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BulkResult:
        out = cls(BulkItem.from_json(item) for item in body.get("results", []))
        out.group = body.get("group")
        return out

    @property
    def ids(self) -> list[str]:
        """Ids of the items that succeeded."""
        return [i.id for i in self if i.ok and i.id is not None]

    @property
    def succeeded(self) -> list[BulkItem]:
        return [i for i in self if i.ok]

    @property
    def failed(self) -> list[BulkItem]:
        return [i for i in self if not i.ok]

    def raise_for_errors(self) -> BulkResult:
        """Raise :class:`BulkError` if any item failed; else return self (for chaining)."""
        if self.failed:
            raise BulkError(self.failed, len(self))
        return self


@dataclass(slots=True)
class SearchPage:
    """One page of a search: rows hold the requested ``fields``; no cursor on the last page."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None
