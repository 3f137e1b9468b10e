"""Kind ``slurm``: tasks run on a Slurm cluster's nodes, submitted with sbatch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobgate.backends.base import Backend
from jobgate.backends.registry import BackendContext, BackendKind
from jobgate.backends.slurm import SlurmBackend, SlurmConfig
from jobgate.backends.slurm.script import Defaults
from jobgate.config import Runtime, Settings
from jobgate.runtimes.bwrap import bwrap_available

NODE_RUNTIME_SETTINGS = (
    "image_map",
    "image_dir",
    "pull_timeout",
    "executor_network",
    "container_user",
    "podman_runtime",
    "container_ulimits",
    "host_mounts",
)
"""Settings a batch node needs to run executors as the gateway would (containers, image
map, host mounts)."""


class SlurmOptions(BaseModel):
    """A ``type: slurm`` entry of the config file. Unset options take the
    ``JOBGATE_SLURM_*`` setting of the same name (then its default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["slurm"]
    shared_dir: Path = Field(
        description="Job directory root the nodes see (task dirs under `jobs/`, "
        "array lists under `arrays/`)."
    )
    slurm_conf: str | None = Field(
        default=None,
        description="slurm.conf of the cluster sbatch/squeue/scancel talk to "
        "(unset: SLURM_CONF, else Slurm's default).",
    )
    partition: str | None = Field(default=None, description="Partition for jobs that name none.")
    account: str | None = Field(default=None, description="Account for jobs that name none.")
    qos: str | None = Field(default=None, description="QOS for jobs that name none.")
    time: str | None = Field(
        default=None, description="Time limit (sbatch `--time` syntax) for jobs that name none."
    )
    python: str | None = Field(
        default=None,
        description="Python with jobgate installed, as the nodes see it "
        "(unset: the gateway's own).",
    )
    runtime: Runtime | None = Field(
        default=None,
        description="How executors run on the nodes (unset: JOBGATE_RUNTIME; `auto` is "
        "decided on the gateway).",
    )
    submit_rate: float | None = Field(
        default=None, gt=0, description="sbatch calls per second at most (token bucket)."
    )
    submit_burst: int | None = Field(
        default=None, ge=1, description="sbatch calls allowed back to back before the rate."
    )
    array_window: float | None = Field(
        default=None,
        ge=0,
        description="Seconds a submission waits for alike ones to share a job array.",
    )
    submit_patience: float | None = Field(
        default=None,
        gt=0,
        description="Seconds sbatch is retried while the controller is down or busy "
        "(unset: JOBGATE_SLURM_SUBMIT_PATIENCE if set, else JOBGATE_SUBMIT_PATIENCE).",
    )
    max_array: int | None = Field(
        default=None, ge=1, description="Largest job array (`1`: no arrays)."
    )


def build(name: str, options: SlurmOptions, ctx: BackendContext) -> Backend:
    """A Slurm backend: the entry's options over the ``JOBGATE_SLURM_*`` settings."""
    settings = ctx.settings

    def pick(key: str) -> object:
        value = getattr(options, key)
        return value if value is not None else getattr(settings, f"slurm_{key}", None)

    shared_dir = options.shared_dir.expanduser().resolve()
    runtime = options.runtime or settings.runtime
    if runtime == "auto":  # decided here so that every node runs tasks the same way
        runtime = "bwrap" if bwrap_available() else "process"
    defaults = Defaults(
        partition=_opt_str(pick("partition")),
        account=options.account,
        qos=options.qos,
        time=_opt_str(pick("time")),
    )
    config = SlurmConfig(
        shared_dir=shared_dir,
        python=_opt_str(pick("python")) or sys.executable,
        runtime=runtime,
        slurm_conf=options.slurm_conf,
        defaults=defaults,
        submit_rate=float(pick("submit_rate")),  # type: ignore[arg-type]
        submit_burst=int(pick("submit_burst")),  # type: ignore[call-overload]
        array_window=float(pick("array_window")),  # type: ignore[arg-type]
        submit_patience=submit_patience(settings, options),
        max_array=int(pick("max_array")),  # type: ignore[call-overload]
        log_tail_bytes=settings.log_tail_bytes,
        keep_files=settings.keep_task_dirs,
        runtime_options=settings.model_dump(mode="json", include=set(NODE_RUNTIME_SETTINGS)),
    )
    return SlurmBackend(config, name=name)


def submit_patience(settings: Settings, options: SlurmOptions) -> float:
    """The entry's own, else ``JOBGATE_SLURM_SUBMIT_PATIENCE`` when set, else the gateway's
    ``JOBGATE_SUBMIT_PATIENCE`` (which every backend uses)."""
    if options.submit_patience is not None:
        return options.submit_patience
    if "slurm_submit_patience" in settings.model_fields_set:
        return settings.slurm_submit_patience
    return settings.submit_patience


def from_settings(settings: Settings) -> SlurmOptions | None:
    """``JOBGATE_BACKEND=slurm`` or ``JOBGATE_SLURM_SHARED_DIR``: one cluster, ``slurm``."""
    if settings.backend != "slurm" and settings.slurm_shared_dir is None:
        return None
    shared = settings.slurm_shared_dir or settings.data_dir / "slurm"
    return SlurmOptions(type="slurm", shared_dir=shared)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


KIND = BackendKind(
    name="slurm",
    config=SlurmOptions,
    build=build,
    from_settings=from_settings,
    summary="a Slurm cluster: sbatch (job arrays), squeue, scancel; nodes share `shared_dir`",
)
