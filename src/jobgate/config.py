"""Settings, read once from the environment (prefix ``JOBGATE_``) and passed down.

One flat class: the environment names are the interface (``JOBGATE_DATA_DIR``, …), and a
flat class keeps each name exactly the field name. Instances are frozen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
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

    service_id: str = "org.jobgate.tes"
    service_name: str = "jobgate"
    organization_name: str = "jobgate"
    organization_url: str = "https://example.org/jobgate"

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip())
        return value

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
