"""Which backends this service drives: built once from the settings (and config file)."""

from __future__ import annotations

import sys
from pathlib import Path

from jobgate.backends import config_file
from jobgate.backends.base import Backend
from jobgate.backends.local import LocalBackend
from jobgate.backends.slurm import SlurmBackend, SlurmConfig
from jobgate.backends.slurm.script import Defaults
from jobgate.config import Settings
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.bwrap import bwrap_available
from jobgate.runtimes.choice import make_runtime

DEFAULT_BACKEND = "local"


def make_backends(settings: Settings) -> dict[str, Backend]:
    """Backends by name. The dispatcher and the API route jobs by these names.

    Without a config file: ``local``, plus ``slurm`` when ``JOBGATE_BACKEND=slurm`` or
    ``JOBGATE_SLURM_SHARED_DIR`` is set. With one: exactly the backends it declares.
    """
    runtime: Runtime | None = None

    def local(name: str, slots: int | None = None) -> LocalBackend:
        nonlocal runtime
        runtime = runtime or make_runtime(settings)
        slots = slots or settings.slots
        return LocalBackend(runtime, slots=slots, log_tail_bytes=settings.log_tail_bytes, name=name)

    if settings.config_file is not None:
        declared = config_file.load(settings.config_file)
        out: dict[str, Backend] = {}
        for name, entry in declared.backends.items():
            if isinstance(entry, config_file.LocalEntry):
                out[name] = local(name, entry.slots)
            else:
                out[name] = slurm_backend(settings, name, entry)
        return out
    backends: dict[str, Backend] = {"local": local("local")}
    if settings.backend == "slurm" or settings.slurm_shared_dir is not None:
        backends["slurm"] = slurm_backend(settings, "slurm", None)
    return backends


def default_backend(settings: Settings, backends: dict[str, Backend]) -> str:
    """The backend jobs run on when they name none: the config file's ``default_backend``,
    else ``JOBGATE_BACKEND`` (``local`` unless set). Raises ValueError if not configured."""
    name = settings.backend
    if settings.config_file is not None:
        declared = config_file.load(settings.config_file)
        if declared.default_backend is not None:
            name = declared.default_backend
        elif "backend" not in settings.model_fields_set:
            name = next(iter(backends))
    if name not in backends:
        raise ValueError(f"default backend {name!r} is not configured: {sorted(backends)}")
    return name


NODE_RUNTIME_SETTINGS = (
    "image_map",
    "image_dir",
    "pull_timeout",
    "executor_network",
    "container_user",
    "podman_runtime",
    "container_ulimits",
)
"""Settings a batch node needs to run executors as the gateway would (containers)."""


def slurm_backend(
    settings: Settings, name: str, entry: config_file.SlurmEntry | None
) -> SlurmBackend:
    """A Slurm backend from the settings, overridden by a config file entry."""

    def pick(key: str) -> object:
        value = getattr(entry, key, None) if entry is not None else None
        return value if value is not None else getattr(settings, f"slurm_{key}", None)

    shared = entry.shared_dir if entry is not None else settings.slurm_shared_dir
    shared_dir = Path(shared or settings.data_dir / "slurm").expanduser().resolve()
    runtime = (entry.runtime if entry is not None else None) or settings.runtime
    if runtime == "auto":  # decided here so that every node runs tasks the same way
        runtime = "bwrap" if bwrap_available() else "process"
    defaults = Defaults(
        partition=_opt_str(pick("partition")),
        account=_opt_str(getattr(entry, "account", None)),
        qos=_opt_str(getattr(entry, "qos", None)),
        time=_opt_str(pick("time")),
    )
    config = SlurmConfig(
        shared_dir=shared_dir,
        python=_opt_str(pick("python")) or sys.executable,
        runtime=runtime,
        slurm_conf=entry.slurm_conf if entry is not None else None,
        defaults=defaults,
        submit_rate=float(pick("submit_rate")),  # type: ignore[arg-type]
        submit_burst=int(pick("submit_burst")),  # type: ignore[call-overload]
        array_window=float(pick("array_window")),  # type: ignore[arg-type]
        submit_patience=float(pick("submit_patience")),  # type: ignore[arg-type]
        max_array=int(pick("max_array")),  # type: ignore[call-overload]
        log_tail_bytes=settings.log_tail_bytes,
        keep_files=settings.keep_task_dirs,
        runtime_options=settings.model_dump(mode="json", include=set(NODE_RUNTIME_SETTINGS)),
    )
    return SlurmBackend(config, name=name)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
