"""Kind ``local``: tasks run on this machine, in the gateway's runtime."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobgate.backends.base import Backend
from jobgate.backends.local import LocalBackend
from jobgate.backends.registry import BackendContext, BackendKind
from jobgate.config import Settings


class LocalOptions(BaseModel):
    """A ``type: local`` entry of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local"]
    slots: int | None = Field(
        default=None,
        ge=1,
        description="CPU slots of this backend; a task takes `cpu_cores` of them "
        "(unset: JOBGATE_SLOTS).",
    )


def build(name: str, options: LocalOptions, ctx: BackendContext) -> Backend:
    s = ctx.settings
    runtime = ctx.runtime
    return LocalBackend(
        runtime,
        slots=options.slots or s.slots,
        log_tail_bytes=s.log_tail_bytes,
        name=name,
        task_root=ctx.jobs_dir,
        uids=ctx.task_uids if runtime.runs_as_task_uid else None,
        max_pids=s.task_max_pids or None,
        job_socket=s.job_socket,
    )


def from_settings(settings: Settings) -> LocalOptions:
    # Always there without a config file: jobs may name it even when Slurm is the default.
    return LocalOptions(type="local")


KIND = BackendKind(
    name="local",
    config=LocalOptions,
    build=build,
    from_settings=from_settings,
    summary="this machine: bubblewrap sandbox, containers or plain processes",
)
