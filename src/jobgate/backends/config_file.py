"""``jobgate serve --config FILE``: named backends and their options, in YAML or TOML.

Example (YAML; TOML has the same shape)::

    default_backend: hpc
    backends:
      local: {type: local}
      hpc:
        type: slurm
        shared_dir: /shared/jobgate
        slurm_conf: /etc/slurm/hpc.conf
        partition: batch
        submit_rate: 5
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalEntry(_Entry):
    type: Literal["local"]
    slots: int | None = Field(default=None, ge=1)


class SlurmEntry(_Entry):
    type: Literal["slurm"]
    shared_dir: Path
    slurm_conf: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    python: str | None = None
    runtime: (
        Literal["auto", "bwrap", "process", "podman", "docker", "apptainer", "singularity"] | None
    ) = None
    submit_rate: float | None = Field(default=None, gt=0)
    submit_burst: int | None = Field(default=None, ge=1)
    array_window: float | None = Field(default=None, ge=0)
    submit_patience: float | None = Field(default=None, gt=0)
    max_array: int | None = Field(default=None, ge=1)


Entry = Annotated[LocalEntry | SlurmEntry, Field(discriminator="type")]


class BackendsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_backend: str | None = Field(default=None, pattern=NAME)
    backends: dict[Annotated[str, Field(pattern=NAME)], Entry] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_is_declared(self) -> BackendsFile:
        if self.default_backend is not None and self.default_backend not in self.backends:
            raise ValueError(
                f"default_backend {self.default_backend!r} is not among the declared "
                f"backends {sorted(self.backends)}"
            )
        return self


class ConfigFileError(ValueError):
    """The config file is missing, unreadable or invalid (the message says where)."""


def load(path: Path) -> BackendsFile:
    """Parse ``path``: ``.toml`` as TOML, anything else as YAML (JSON is YAML too)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc}") from exc
    try:
        return BackendsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigFileError(f"invalid config file {path}:\n{exc}") from exc
