"""Kind ``gridengine``: tasks run on a Grid Engine cell's exec hosts, submitted with qsub."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobgate.backends.base import Backend
from jobgate.backends.gridengine.backend import GridEngineBackend, GridEngineConfig
from jobgate.backends.gridengine.script import Defaults
from jobgate.backends.kinds.slurm import NODE_RUNTIME_SETTINGS
from jobgate.backends.registry import BackendContext, BackendKind
from jobgate.config import Runtime, Settings
from jobgate.runtimes.bwrap import bwrap_available


class GridEngineOptions(BaseModel):
    """A ``type: gridengine`` entry of the config file. Unset options take the
    ``JOBGATE_GRIDENGINE_*`` setting of the same name (then its default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["gridengine"]
    shared_dir: Path = Field(
        description="Job directory root the exec hosts see (task dirs under `jobs/`, "
        "array lists under `arrays/`)."
    )
    sge_root: str | None = Field(
        default=None, description="SGE_ROOT of the cell (unset: the gateway's SGE_ROOT)."
    )
    sge_cell: str | None = Field(
        default=None, description="SGE_CELL (unset: the gateway's SGE_CELL, else `default`)."
    )
    queue: str | None = Field(default=None, description="Queue (`-q`) for jobs that name none.")
    project: str | None = Field(default=None, description="Project (`-P`) for jobs that name none.")
    time: str | None = Field(
        default=None,
        description="Run time limit (`h_rt`: seconds or H:MM:SS) for jobs that name none.",
    )
    pe: str | None = Field(
        default=None,
        description="Parallel environment for multi-core jobs (`allocation_rule $pe_slots`; "
        "unset: JOBGATE_GRIDENGINE_PE, `smp`).",
    )
    memory_resource: str | None = Field(
        default=None,
        description="Per-slot resource `ram_gb` is requested as (unset: "
        "JOBGATE_GRIDENGINE_MEMORY_RESOURCE, `h_vmem`; `none`: memory is not requested).",
    )
    python: str | None = Field(
        default=None,
        description="Python with jobgate installed, as the exec hosts see it (unset: the "
        "gateway's own).",
    )
    runtime: Runtime | None = Field(
        default=None,
        description="How executors run on the exec hosts (unset: JOBGATE_RUNTIME; `auto` is "
        "decided on the gateway).",
    )
    submit_rate: float | None = Field(
        default=None, gt=0, description="qsub calls per second at most (token bucket)."
    )
    submit_burst: int | None = Field(
        default=None, ge=1, description="qsub calls allowed back to back before the rate."
    )
    array_window: float | None = Field(
        default=None,
        ge=0,
        description="Seconds a submission waits for alike ones to share an array job.",
    )
    submit_patience: float | None = Field(
        default=None,
        gt=0,
        description="Seconds qsub is retried while the qmaster is unreachable "
        "(unset: JOBGATE_SUBMIT_PATIENCE).",
    )
    max_array: int | None = Field(
        default=None, ge=1, description="Largest array job (`1`: no arrays)."
    )


def build(name: str, options: GridEngineOptions, ctx: BackendContext) -> Backend:
    """A Grid Engine backend: the entry's options over the ``JOBGATE_GRIDENGINE_*``
    settings."""
    settings = ctx.settings

    def pick(key: str) -> object:
        value = getattr(options, key)
        return value if value is not None else getattr(settings, f"gridengine_{key}", None)

    runtime = options.runtime or settings.runtime
    if runtime == "auto":  # decided here so that every exec host runs tasks the same way
        runtime = "bwrap" if bwrap_available() else "process"
    memory = str(pick("memory_resource"))
    defaults = Defaults(
        queue=_opt(pick("queue")),
        project=_opt(pick("project")),
        time=_opt(pick("time")),
        pe=str(pick("pe")),
        memory_resource=None if memory == "none" else memory,
    )
    config = GridEngineConfig(
        shared_dir=options.shared_dir.expanduser().resolve(),
        python=_opt(pick("python")) or sys.executable,
        runtime=runtime,
        sge_root=options.sge_root,
        sge_cell=options.sge_cell,
        defaults=defaults,
        submit_rate=float(pick("submit_rate")),  # type: ignore[arg-type]
        submit_burst=int(pick("submit_burst")),  # type: ignore[call-overload]
        array_window=float(pick("array_window")),  # type: ignore[arg-type]
        submit_patience=options.submit_patience or settings.submit_patience,
        max_array=int(pick("max_array")),  # type: ignore[call-overload]
        log_tail_bytes=settings.log_tail_bytes,
        keep_files=settings.keep_task_dirs,
        runtime_options=settings.model_dump(mode="json", include=set(NODE_RUNTIME_SETTINGS)),
    )
    return GridEngineBackend(config, name=name)


def from_settings(settings: Settings) -> GridEngineOptions | None:
    """``JOBGATE_BACKEND=gridengine`` or ``JOBGATE_GRIDENGINE_SHARED_DIR``: one cell,
    named ``gridengine``."""
    if settings.backend != "gridengine" and settings.gridengine_shared_dir is None:
        return None
    shared = settings.gridengine_shared_dir or settings.data_dir / "gridengine"
    return GridEngineOptions(type="gridengine", shared_dir=shared)


def check(name: str, options: GridEngineOptions) -> None:
    """A cell that does not exist fails the start, not every later submission."""
    root = options.sge_root or os.environ.get("SGE_ROOT")
    if root is None:
        return  # the client commands' own default (Debian's wrappers set one)
    cell = options.sge_cell or os.environ.get("SGE_CELL") or "default"
    common = Path(root) / cell / "common"
    if not common.is_dir():
        raise ValueError(
            f"backend {name!r}: no Grid Engine cell {cell!r} under SGE_ROOT {root} "
            f"({common} is not a directory)"
        )


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


KIND = BackendKind(
    name="gridengine",
    config=GridEngineOptions,
    build=build,
    from_settings=from_settings,
    check=check,
    summary="a Grid Engine cell: qsub (array jobs), qstat -xml, qdel; exec hosts share "
    "`shared_dir`",
)
