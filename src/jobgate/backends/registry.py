"""Backend kinds: what a config file's ``type`` may name, discovered from entry points.

A kind is a :class:`BackendKind` object published in the entry-point group
``jobgate.backends`` under its name. jobgate's own kinds are declared in its
``pyproject.toml``; a site adds one from its own distribution the same way::

    [project.entry-points."jobgate.backends"]
    mykind = "mysite.jobgate_kind:KIND"

Contract of a kind:

- ``config`` is a frozen pydantic model with ``extra="forbid"`` whose ``type`` field is
  ``Literal["<name>"]``; its fields (with their ``Field(description=...)``) are the options
  a config file entry takes and what ``jobgate backends`` documents.
- ``build(name, config, context)`` returns the :class:`~jobgate.backends.base.Backend` named
  ``name``; ``context`` holds what the backends of one gateway share (the settings, the
  local runtime, the task uid pool).
- ``from_settings(settings)``, optional, returns the config for a site without a config
  file (flat ``JOBGATE_*`` settings), or None when the settings do not ask for this kind.
  Without it, ``JOBGATE_BACKEND=<name>`` alone configures the kind with its defaults.

Discovery never fails as a whole: a kind whose module (or a dependency of it) does not
import, or whose object breaks the contract, is listed as unavailable with the reason,
logged once, and the others work.
"""

from __future__ import annotations

import functools
import logging
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from jobgate.backends.base import Backend
    from jobgate.config import Settings
    from jobgate.runner.uids import TaskUids
    from jobgate.runtimes.base import Runtime

GROUP = "jobgate.backends"
log = logging.getLogger(__name__)

C = TypeVar("C", bound=BaseModel)


class BackendContext:
    """What the backends of one gateway share, made on first use and then reused."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: Runtime | None = None
        self._uids: TaskUids | None = None
        self._uids_made = False

    @property
    def runtime(self) -> Runtime:
        """The runtime local executors use (one per gateway: it sweeps leftovers at start)."""
        if self._runtime is None:
            from jobgate.runtimes.choice import make_runtime

            self._runtime = make_runtime(self.settings)
        return self._runtime

    @property
    def task_uids(self) -> TaskUids | None:
        """The one pool of host uids local tasks run as (None: they run as the service)."""
        if not self._uids_made:
            from jobgate.backends.choice import task_uids

            self._uids = task_uids(self.settings)
            self._uids_made = True
        return self._uids

    @property
    def jobs_dir(self) -> Path:
        """The gateway's own task directory root."""
        return self.settings.jobs_dir


@dataclass(frozen=True, eq=False)
class BackendKind(Generic[C]):
    """One kind of backend, as a distribution publishes it (see the module docstring)."""

    name: str
    config: type[C]
    build: Callable[[str, C, BackendContext], Backend]
    from_settings: Callable[[Settings], C | None] | None = None
    check: Callable[[str, C], None] | None = None
    """Checks of the host a backend needs (a path, a cell) that start nothing: run before
    the gateway serves; a ValueError names what is wrong and stops the start."""
    summary: str = ""
    """One line for listings (``jobgate backends``, the backends endpoint)."""

    def options(self) -> list[dict[str, Any]]:
        """The config options (all fields but ``type``): name, type, default, description."""
        out = []
        for key, info in self.config.model_fields.items():
            if key == "type":
                continue
            out.append(
                {
                    "name": key,
                    "type": _type_text(info.annotation),
                    "required": info.is_required(),
                    "default": None if info.is_required() else _jsonable(info.get_default()),
                    "description": info.description or "",
                }
            )
        return out


@dataclass(frozen=True)
class Unavailable:
    """A kind that is declared but cannot be used, and why."""

    name: str
    target: str
    """The entry point's value (``module:attribute``)."""
    error: str


class UnknownKind(ValueError):
    """No kind of that name is declared."""


class KindUnavailable(ValueError):
    """The kind is declared but did not load (the message holds the reason)."""


@dataclass(frozen=True)
class Catalog:
    """The kinds found at discovery: usable ones and the reasons for the others."""

    kinds: Mapping[str, BackendKind[Any]]
    unavailable: Mapping[str, Unavailable] = field(default_factory=dict)

    def get(self, name: str) -> BackendKind[Any]:
        """The kind ``name``; raises :class:`KindUnavailable` or :class:`UnknownKind`."""
        if name in self.kinds:
            return self.kinds[name]
        if name in self.unavailable:
            bad = self.unavailable[name]
            raise KindUnavailable(
                f"backend kind {name!r} is unavailable: {bad.error} (from {bad.target})"
            )
        known = ", ".join(sorted(self.kinds)) or "none"
        raise UnknownKind(f"unknown backend kind {name!r} (known kinds: {known})")

    def describe(self) -> list[dict[str, Any]]:
        """Every declared kind: name, availability (and the reason), summary, options."""
        out: list[dict[str, Any]] = []
        for name in sorted({*self.kinds, *self.unavailable}):
            if name in self.kinds:
                kind = self.kinds[name]
                out.append(
                    {
                        "kind": name,
                        "available": True,
                        "summary": kind.summary,
                        "options": kind.options(),
                    }
                )
            else:
                out.append(
                    {"kind": name, "available": False, "error": self.unavailable[name].error}
                )
        return out


def discover(points: Iterable[EntryPoint] | None = None) -> Catalog:
    """Load every kind of the ``jobgate.backends`` group (or of ``points``)."""
    if points is None:
        points = entry_points(group=GROUP)
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in points:
        by_name.setdefault(ep.name, []).append(ep)
    kinds: dict[str, BackendKind[Any]] = {}
    unavailable: dict[str, Unavailable] = {}
    for name, eps in sorted(by_name.items()):
        targets = sorted({ep.value for ep in eps})
        if len(targets) > 1:
            # Two distributions claim the name: choosing one silently would run the wrong code.
            unavailable[name] = Unavailable(
                name, " / ".join(targets), f"declared more than once: {', '.join(targets)}"
            )
            continue
        ep = eps[0]
        try:
            obj = ep.load()
            kinds[name] = _checked(name, obj)
        except Exception as exc:  # any failure of a third-party module stays its own
            unavailable[name] = Unavailable(name, ep.value, f"{type(exc).__name__}: {exc}")
    return Catalog(kinds, unavailable)


@functools.cache
def catalog() -> Catalog:
    """The kinds of this process (discovered once); unavailable ones are logged."""
    found = discover()
    if not found.kinds and not found.unavailable:
        # jobgate's own kinds are entry points too: metadata older than them lists none.
        log.error("no backend kinds in entry-point group %s: reinstall jobgate", GROUP)
    log.info("backend kinds: %s", ", ".join(sorted(found.kinds)) or "none")
    for bad in found.unavailable.values():
        log.error("backend kind %r is unavailable: %s (from %s)", bad.name, bad.error, bad.target)
    return found


def _checked(name: str, obj: object) -> BackendKind[Any]:
    if not isinstance(obj, BackendKind):
        raise TypeError(f"entry point object is a {type(obj).__name__}, not a BackendKind")
    if obj.name != name:
        raise ValueError(f"the kind calls itself {obj.name!r}, but is declared as {name!r}")
    cfg = obj.config
    if not (isinstance(cfg, type) and issubclass(cfg, BaseModel)):
        raise TypeError("its config is not a pydantic model")
    type_field = cfg.model_fields.get("type")
    if type_field is None or typing.get_args(type_field.annotation) != (name,):
        raise ValueError(f"its config's `type` field must be Literal[{name!r}]")
    conf = cfg.model_config
    if conf.get("extra") != "forbid" or not conf.get("frozen"):
        raise ValueError("its config must be frozen and forbid extra fields")
    return obj


_kinds_of: weakref.WeakKeyDictionary[Backend, str] = weakref.WeakKeyDictionary()


def build(kind: BackendKind[C], name: str, config: C, context: BackendContext) -> Backend:
    """``kind``'s backend ``name``, remembered as of that kind (see :func:`kind_of`), with
    the gateway's ``submit_patience`` unless the kind set one."""
    backend = kind.build(name, config, context)
    if "submit_patience" not in vars(backend):
        # The gateway's patience, unless the kind gave its backend its own (Slurm's).
        backend.submit_patience = context.settings.submit_patience
    _kinds_of[backend] = kind.name
    return backend


def kind_of(backend: Backend) -> str:
    """The kind that built ``backend`` (its class's ``kind`` when not built here)."""
    return _kinds_of.get(backend) or str(getattr(type(backend), "kind", "unknown"))


def _type_text(annotation: object) -> str:
    """``int | None``, ``auto | bwrap | process``, ``Path``: the type as a reader wants it."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_text(a) for a in args)
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("pathlib.", "")


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
