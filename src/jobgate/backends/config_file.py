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

Each entry's ``type`` names a backend kind of the registry (``backends/registry.py``); the
entry is validated by that kind's config model, so the file takes exactly the kinds this
installation has (``jobgate backends`` lists them and their options).
"""

from __future__ import annotations

import functools
import operator
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from jobgate.backends import registry
from jobgate.backends.routing import RoutingConfig

NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class ConfigFileError(ValueError):
    """The config file is missing, unreadable or invalid (the message says where)."""


class _FileBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_backend: str | None = Field(default=None, pattern=NAME)
    backends: dict[str, Any]
    routing: RoutingConfig | None = None

    @model_validator(mode="after")
    def _default_is_declared(self) -> _FileBase:
        if self.default_backend is not None and self.default_backend not in self.backends:
            raise ValueError(
                f"default_backend {self.default_backend!r} is not among the declared "
                f"backends {sorted(self.backends)}"
            )
        unknown = sorted(self.routing.backend_names() - set(self.backends)) if self.routing else []
        if unknown:
            raise ValueError(
                f"routing names backends that are not declared: {unknown} "
                f"(declared: {sorted(self.backends)})"
            )
        return self


def file_model(kinds: registry.Catalog | None = None) -> type[_FileBase]:
    """The model of a whole config file: ``backends`` entries discriminated on ``type``
    over the available kinds (its JSON schema documents the file)."""
    kinds = kinds or registry.catalog()
    configs = tuple(k.config for k in kinds.kinds.values())
    if not configs:
        raise ConfigFileError("no backend kind is available (see `jobgate backends`)")
    entry: Any = configs[0]
    if len(configs) > 1:
        entry = Annotated[functools.reduce(operator.or_, configs), Field(discriminator="type")]
    model: type[_FileBase] = create_model(
        "BackendsFile",
        __base__=_FileBase,
        backends=(dict[Annotated[str, Field(pattern=NAME)], entry], Field(min_length=1)),
    )
    return model


@dataclass(frozen=True)
class DeclaredBackends:
    """A valid config file: its default backend (if named) and each backend's options."""

    default_backend: str | None
    backends: dict[str, BaseModel]
    """Name → the options, an instance of its kind's config model (``.type``: the kind)."""
    routing: RoutingConfig | None = None


def load(path: Path, kinds: registry.Catalog | None = None) -> DeclaredBackends:
    """Parse ``path``: ``.toml`` as TOML, anything else as YAML (JSON is YAML too).

    Raises :class:`ConfigFileError` naming the backend and field of each problem, and for
    an entry of an unavailable kind, the kind and why it did not load.
    """
    kinds = kinds or registry.catalog()
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc}") from exc
    problems = _kind_problems(raw, kinds)
    if problems:
        raise ConfigFileError(f"invalid config file {path}:\n" + "\n".join(problems))
    try:
        parsed = file_model(kinds).model_validate(raw)
    except ValidationError as exc:
        tags = set(kinds.kinds) if len(kinds.kinds) > 1 else set()
        lines = [_error_line(e, tags) for e in exc.errors(include_url=False)]
        raise ConfigFileError(f"invalid config file {path}:\n" + "\n".join(lines)) from None
    return DeclaredBackends(parsed.default_backend, dict(parsed.backends), parsed.routing)


def _kind_problems(raw: object, kinds: registry.Catalog) -> list[str]:
    """Entries whose ``type`` is unknown or unavailable (clearer than a union's error)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("backends"), dict):
        return []
    out = []
    for name, entry in raw["backends"].items():
        kind = entry.get("type") if isinstance(entry, dict) else None
        if not isinstance(kind, str):
            continue
        try:
            kinds.get(kind)
        except ValueError as exc:
            out.append(f"  backends.{name}.type: {exc}")
    return out


def _error_line(error: Any, tags: set[str]) -> str:
    """``backends.<name>.<field>: <what> (backend '<name>', type <kind>)``."""
    loc = [str(p) for p in error["loc"]]
    if len(loc) >= 2 and loc[0] == "backends":
        # A discriminated union puts the entry's kind into the path: say it in words.
        kind = loc[2] if len(loc) >= 3 and loc[2] in tags else None
        rest = loc[3:] if kind else loc[2:]
        where = ".".join(["backends", loc[1], *rest])
        about = f"backend {loc[1]!r}" + (f", type {kind}" if kind else "")
        return f"  {where}: {error['msg']} ({about})"
    return f"  {'.'.join(loc) or 'file'}: {error['msg']}"


def __getattr__(name: str) -> Any:
    # The entry models of jobgate's own kinds, by their earlier names.
    if name in ("LocalEntry", "SlurmEntry"):
        return registry.catalog().get(name.removesuffix("Entry").lower()).config
    raise AttributeError(name)
