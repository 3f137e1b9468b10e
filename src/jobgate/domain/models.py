"""Job: a superset of the GA4GH TES v1.1 task, shared by every front end and the engine.

Optional fields default to ``None`` so that ``model_dump(exclude_none=True)`` returns only
what the client sent or the server filled in — strict TES clients reject echoed defaults.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobgate.domain import limits as lim
from jobgate.domain.states import State

WILDCARDS = frozenset("*?[")
WARNINGS_KEY = "_warnings"
"""Key in a stored spec holding submission warnings for the task's system_logs."""


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, as TES clients expect."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    """A UUIDv7: time-ordered (index-friendly), unguessable, and a valid UUID for SRCNet."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def _check_container_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if ".." in value.split("/"):
        raise ValueError(f"must not contain '..', got {value!r}")
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    return value


# Where no runtime lets a task place files: the sandbox mounts its own /proc, /dev, /sys.
RESERVED_DIRS = ("proc", "dev", "sys")


def reserved_path(value: str) -> str | None:
    """Why no task can have a file at ``value`` (``/`` itself, or inside a directory the
    sandbox provides), or None. Empty and ``.`` components count for nothing."""
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if not parts:
        return "it is the container's root directory"
    if parts[0] in RESERVED_DIRS:
        return f"/{parts[0]} is provided by the sandbox"
    return None


def _check_file_path(value: str) -> str:
    """An input's or output's path: a container path where the task's own files can be."""
    _check_container_path(value)
    why = reserved_path(value)
    if why is not None:
        raise ValueError(f"{value!r} cannot hold a task's file: {why}")
    return value


ContainerPath = Annotated[str, Field(min_length=1, max_length=lim.PATH)]


class _Model(BaseModel):
    # Unknown fields are ignored, not rejected: clients of older TES versions send extras.
    model_config = ConfigDict(extra="ignore", use_enum_values=True, defer_build=True)


class FileType(StrEnum):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class Input(_Model):
    name: lim.Name | None = None
    description: lim.Description | None = None
    url: lim.Url | None = None
    path: ContainerPath
    type: FileType | None = None
    content: str | None = None
    streamable: lim.Flag | None = None

    _path = field_validator("path")(classmethod(lambda cls, v: _check_file_path(v)))

    @model_validator(mode="after")
    def _url_or_content(self) -> Input:
        if self.content is None and not self.url:
            raise ValueError("an input needs either 'url' or 'content'")
        return self


class Output(_Model):
    name: lim.Name | None = None
    description: lim.Description | None = None
    url: str = Field(min_length=1, max_length=lim.URL)
    path: ContainerPath
    path_prefix: str | None = Field(default=None, max_length=lim.PATH)
    type: FileType | None = None

    _path = field_validator("path")(classmethod(lambda cls, v: _check_file_path(v)))

    @property
    def has_wildcards(self) -> bool:
        return any(c in WILDCARDS for c in self.path)

    @model_validator(mode="after")
    def _prefix_for_wildcards(self) -> Output:
        if self.has_wildcards and not self.path_prefix:
            raise ValueError("'path_prefix' is required when 'path' contains wildcards")
        return self


class Executor(_Model):
    image: str = Field(min_length=1, max_length=lim.IMAGE)
    command: list[Annotated[str, Field(max_length=lim.ARG)]] = Field(
        min_length=1, max_length=lim.ARGS
    )
    workdir: str | None = Field(default=None, max_length=lim.PATH)
    stdin: str | None = Field(default=None, max_length=lim.PATH)
    stdout: str | None = Field(default=None, max_length=lim.PATH)
    stderr: str | None = Field(default=None, max_length=lim.PATH)
    env: (
        dict[
            Annotated[str, Field(max_length=lim.ENV_KEY)],
            Annotated[str, Field(max_length=lim.ENV_VALUE)],
        ]
        | None
    ) = Field(default=None, max_length=lim.ENV)
    ignore_error: lim.Flag | None = None

    @field_validator("workdir", "stdin", "stdout", "stderr")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _check_container_path(value)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if not key or "=" in key or "\x00" in key:
                raise ValueError(f"invalid environment variable name {key!r}")
        return value


class Resources(_Model):
    cpu_cores: lim.Int | None = Field(default=None, ge=1, le=lim.CPU_CORES)
    preemptible: lim.Flag | None = None
    ram_gb: float | None = Field(default=None, gt=0, le=lim.GB, allow_inf_nan=False)
    disk_gb: float | None = Field(default=None, gt=0, le=lim.GB, allow_inf_nan=False)
    zones: list[Annotated[str, Field(max_length=lim.ZONE)]] | None = Field(
        default=None, max_length=lim.ZONES
    )
    backend_parameters: (
        dict[
            Annotated[str, Field(max_length=lim.BACKEND_PARAMETER_KEY)],
            Annotated[str, Field(max_length=lim.BACKEND_PARAMETER_VALUE)],
        ]
        | None
    ) = Field(default=None, max_length=lim.BACKEND_PARAMETERS)
    backend_parameters_strict: lim.Flag | None = None


class ExecutorLog(_Model):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int


class OutputFileLog(_Model):
    url: str
    path: str
    size_bytes: str


class TaskLog(_Model):
    logs: list[ExecutorLog] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[OutputFileLog] = Field(default_factory=list)
    system_logs: list[str] | None = None


class TaskSpec(_Model):
    """What a client submits: the TES task without its server-assigned fields."""

    name: lim.Name | None = None
    description: lim.Description | None = None
    inputs: list[Input] | None = Field(default=None, max_length=lim.INPUTS)
    outputs: list[Output] | None = Field(default=None, max_length=lim.OUTPUTS)
    resources: Resources | None = None
    executors: list[Executor] = Field(min_length=1, max_length=lim.EXECUTORS)
    volumes: list[ContainerPath] | None = Field(default=None, max_length=lim.VOLUMES)
    tags: lim.Tags | None = None

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_check_container_path(v) for v in value]


class Job(TaskSpec):
    """A submitted task with everything the server knows about it."""

    id: str
    state: State = State.QUEUED
    logs: list[TaskLog] | None = None
    creation_time: datetime
    owner: str | None = None
    backend: str = "local"
    priority: int = 0

    @property
    def cpu_cores(self) -> int:
        return (self.resources.cpu_cores if self.resources else None) or 1

    @property
    def ram_bytes(self) -> int | None:
        gb = self.resources.ram_gb if self.resources else None
        return None if gb is None else int(gb * 1024**3)


class JobEvent(_Model):
    """One state change, as recorded in the event history."""

    job_id: str
    at: datetime
    from_state: State | None
    to_state: State
    detail: str | None = None
    source: str
    seq: int | None = None
    """Position in the global event order (resume point for event streams)."""
    owner: str | None = None
    app_status: str | None = None


def spec_fields() -> frozenset[str]:
    return frozenset(TaskSpec.model_fields)


JSON = dict[str, Any]


@dataclass(slots=True)
class JobRecord:
    """A job as stored: the submitted spec kept as the client's JSON, plus server fields.

    Front ends render views from this without re-validating the spec (it was validated once,
    at submission); the engine turns it into a :class:`Job` with :meth:`to_job`.
    """

    id: str
    state: State
    spec: dict[str, Any]
    logs: list[dict[str, Any]] | None
    created_at: datetime
    owner: str | None = None
    backend: str = "local"
    priority: int = 0
    attempt: int = 0
    native_id: str | None = None
    detail: str | None = None
    group_id: str | None = None
    reschedules: int = 0
    updated_at: datetime | None = None
    app_status: str | None = None
    share_group: str | None = None
    waiting_since: datetime | None = None
    """Since when the job waits for its backend to accept it (transient submit errors)."""
    retries: int = 0
    """Automatic retries made (the job's retry policy)."""
    state_since: datetime | None = None
    """When the job entered its current state (per-state timeouts)."""
    stalled: bool = False
    """RUNNING, but no heartbeat for longer than its heartbeat timeout."""
    heartbeat_at: datetime | None = None
    heartbeat: dict[str, Any] | None = None
    """The last heartbeat's fields (load, memory, CPU seconds, …)."""
    dispatcher: str | None = None
    """The dispatcher process that drives it (its lease's id) while it is active."""

    def to_job(self) -> Job:
        return Job.model_validate(
            {
                **self.spec,
                "id": self.id,
                "state": self.state,
                "logs": self.logs,
                "creation_time": self.created_at,
                "owner": self.owner,
                "backend": self.backend,
                "priority": self.priority,
            }
        )


def build_validators() -> None:
    """Build every model's validator now. Models defer it to their first use (so that the
    CLI, which loads them all and uses few, starts fast); a server calls this at start so
    that no request pays for it."""
    pending: list[type[BaseModel]] = [_Model]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        cls.model_rebuild(force=True)
