"""Settings, read once from the environment (prefix ``JOBGATE_``) and passed down.

One flat class: the environment names are the interface (``JOBGATE_DATA_DIR``, …), and a
flat class keeps each name exactly the field name. Instances are frozen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Runtime = Literal["auto", "bwrap", "process"]


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobgate"


class Settings(BaseSettings):
    """Everything the service needs to start; built once by the CLI or the tests."""

    model_config = SettingsConfigDict(env_prefix="JOBGATE_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""
    """SQLAlchemy async URL; empty means an SQLite file under ``data_dir``."""
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL"
    """NORMAL in WAL mode survives a process crash (kill -9); FULL also survives power loss."""

    allowed_dirs: Annotated[tuple[Path, ...], NoDecode] = ()
    """Directories that ``file://`` inputs and outputs may use (comma-separated)."""
    runtime: Runtime = "auto"
    """How executors are isolated: bwrap (default where installed) or plain processes."""
    slots: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """CPU slots of the local backend; a task takes ``cpu_cores`` of them."""

    poll_interval: float = Field(default=2.0, gt=0)
    """Seconds between backend polls and queue scans when nothing wakes the dispatcher."""
    max_attempts: int = Field(default=2, ge=1)
    """How many times a task interrupted by a gateway restart is run before SYSTEM_ERROR."""
    log_tail_bytes: int = Field(default=64 * 1024, ge=0)
    """How much of each executor's stdout/stderr is kept in the task logs."""
    max_content_bytes: int = Field(default=1024 * 1024, ge=128 * 1024)
    """Largest inline ``content`` of one input (the spec asks for at least 128 KiB)."""
    parametric_cap: int = Field(default=10_000, ge=1)
    """Most jobs one parametric submission may expand into."""
    max_reschedules: int = Field(default=10, ge=0)
    """How often one job may be rescheduled."""
    keep_task_dirs: bool = False
    """Keep each task's working directory after it ends (for debugging)."""
    http_timeout: float = Field(default=60.0, gt=0)
    sandbox_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    """Largest sandbox (uploaded or packed from a job's output_sandbox)."""
    upload_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    """Largest file uploaded into a held job (``PUT /api/v1/jobs/{id}/files/...``)."""
    sse_heartbeat: float = Field(default=15.0, gt=0)
    """Seconds between keep-alive comments on an idle event stream."""

    webhook_secret: SecretStr | None = None
    """HMAC key for webhook signatures; unset: generated once, kept in ``data_dir``."""
    webhook_max_attempts: int = Field(default=8, ge=1)
    """Deliveries of one webhook event before it is given up (connection errors, 5xx, 429)."""
    webhook_backoff: float = Field(default=1.0, gt=0)
    """Seconds before the first webhook retry; doubled for each further one."""
    webhook_backoff_max: float = Field(default=300.0, gt=0)
    """Longest wait between two webhook attempts (also caps a receiver's Retry-After)."""
    webhook_timeout: float = Field(default=10.0, gt=0)
    """Seconds one webhook request may take before it counts as failed."""
    src_nodes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """SKA SRCNet node → backend (``CHSRC=local,UKSRC=local``); empty: all nodes run locally."""

    service_id: str = "org.jobgate.tes"
    service_name: str = "jobgate"
    organization_name: str = "jobgate"
    organization_url: str = "https://example.org/jobgate"

    # -- Slurm backend and named backends (issue 7) -------------------------------------
    backend: str = Field(default="local", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The default backend's name (``local``, ``slurm``, or one a config file declares)."""
    config_file: Path | None = None
    """YAML or TOML file declaring named backends and their options (``serve --config``)."""
    slurm_shared_dir: Path | None = None
    """Job directory root the Slurm nodes see; unset: ``data_dir/slurm`` (one-node setups)."""
    slurm_partition: str | None = None
    """Partition for jobs that name none (unset: the cluster's default partition)."""
    slurm_time: str | None = None
    """Time limit (Slurm ``--time`` syntax) for jobs that name none."""
    slurm_submit_rate: float = Field(default=20.0, gt=0)
    """sbatch calls per second at most (token bucket), refilled steadily."""
    slurm_submit_burst: int = Field(default=40, ge=1)
    """sbatch calls allowed back to back before the rate applies."""
    slurm_array_window: float = Field(default=0.05, ge=0)
    """Seconds a submission waits for others like it to go out as one job array."""
    slurm_submit_patience: float = Field(default=600.0, gt=0)
    """Seconds a submission keeps retrying while the controller is unreachable or busy."""
    slurm_python: str | None = None
    """Python on the nodes with jobgate installed; unset: the gateway's own interpreter."""
    slurm_max_array: int = Field(default=1000, ge=1)
    """Most jobs one sbatch --array carries (below the site's MaxArraySize); 1: no arrays."""

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip())
        return value

    @field_validator("src_nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        bad = [p for p in pairs if "=" not in p]
        if bad:
            raise ValueError(f"expected NODE=backend pairs, got {bad}")
        return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}

    @field_validator("allowed_dirs")
    @classmethod
    def _absolute_dirs(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(p.expanduser().resolve() for p in value)

    @model_validator(mode="after")
    def _resolve_data_dir(self) -> Settings:
        object.__setattr__(self, "data_dir", self.data_dir.expanduser().resolve())
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'jobgate.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def logs_dir(self) -> Path:
        """Executors' stdout/stderr kept after a job ends: ``logs/<job id>/<n>.stdout``."""
        return self.data_dir / "logs"

    @property
    def uploads_dir(self) -> Path:
        """Files uploaded into held jobs: ``uploads/<job id>/<path>``."""
        return self.data_dir / "uploads"

    @property
    def sandboxes_dir(self) -> Path:
        """Content-addressed sandboxes: ``sandboxes/<sha256>``."""
        return self.data_dir / "sandboxes"
