"""Routing: which backend a job goes to when it names none, and where it goes when that
backend fails. One policy, applied in this order:

1. **explicit** choice (native ``backend``, ``backend_parameters.backend``, a zone naming a
   backend or one of its ``zones``) is never overridden (the service resolves it);
2. **data locality**: ``locality`` maps URL prefixes to backends; the backends holding
   most of the job's inputs (by count: TES inputs carry no sizes) are preferred;
3. **resource fit**: a backend whose ``limits`` cannot hold the job's cpu/ram/disk is
   never chosen (none fits: the submission is a 400);
4. **load**: fewest active jobs per capacity (``capacity``, else the backend's own);
5. **failover**: a backend whose submits failed transiently ``failures`` times in a row,
   or that reports itself unhealthy, is skipped (circuit open) until ``cooldown`` seconds
   passed; then one job probes it (half-open): success closes the circuit, failure opens
   it again. A job refused transiently moves to the next candidate.

The same policy routes across every kind of backend. Each choice is described in words
("routed to ch: 3/3 inputs under s3://bucket-ch; 1 of 3 candidates down") for the job's
events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobgate.domain.models import TaskSpec
from jobgate.domain.states import FINAL, State

ROUTED_KEY = "_routed"
"""Key in a stored spec marking a job the policy placed (so failover may move it)."""
TRIED_KEY = "_tried"
"""Key in a stored spec listing backends that refused the job transiently, newest first."""


class Limits(BaseModel):
    """The largest task a backend takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_cores: int | None = Field(default=None, ge=1, description="Most cores of one task.")
    ram_gb: float | None = Field(default=None, gt=0, description="Most RAM (GB) of one task.")
    disk_gb: float | None = Field(default=None, gt=0, description="Most disk (GB) of one task.")


class RoutingConfig(BaseModel):
    """The ``routing`` section of the config file (absent: jobs naming no backend go to
    the default backend, as without routing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: list[str] | None = Field(
        default=None, description="Backends automatic routing chooses among (unset: all)."
    )
    locality: dict[str, str] = Field(
        default_factory=dict,
        description="Input URL prefix → the backend where that data is "
        "(`s3://bucket-ch/: ch`, `file:///gpfs/: hpc`).",
    )
    limits: dict[str, Limits] = Field(
        default_factory=dict, description="Backend → the largest task it takes."
    )
    capacity: dict[str, int] = Field(
        default_factory=dict, description="Backend → jobs at once, for load balancing."
    )
    failures: int = Field(
        default=3, ge=1, description="Transient submit failures in a row that open a circuit."
    )
    cooldown: float = Field(
        default=30.0, gt=0, description="Seconds an open circuit waits before a probe."
    )

    def backend_names(self) -> set[str]:
        return {
            *(self.candidates or []),
            *self.locality.values(),
            *self.limits,
            *self.capacity,
        }


class Unroutable(ValueError):
    """No candidate backend can take the job (the message says why)."""


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


@dataclass(frozen=True)
class Route:
    backend: str
    reason: str


@dataclass
class Router:
    """The policy over named backends. ``health``: backend name → whether it says it can
    reach its system; ``capacity_of``: its own capacity (None: unbounded)."""

    config: RoutingConfig
    names: list[str]
    health: Callable[[str], bool] = lambda _name: True
    capacity_of: Callable[[str], int | None] = lambda _name: None
    clock: Callable[[], float] = time.monotonic
    _circuits: dict[str, _Circuit] = field(default_factory=dict)
    _placed: dict[str, str] = field(default_factory=dict)  # active job id → backend
    _counts: dict[str, int] = field(default_factory=dict)  # backend → active jobs

    @property
    def candidates(self) -> list[str]:
        return list(self.config.candidates) if self.config.candidates else list(self.names)

    # -- the policy ----------------------------------------------------------------------

    def route(self, spec: TaskSpec, *, exclude: Iterable[str] = ()) -> Route:
        """The backend for ``spec`` among the candidates not in ``exclude``; raises
        :class:`Unroutable` when none may take it."""
        skip = set(exclude)
        cands = [n for n in self.candidates if n not in skip]
        notes: list[str] = []
        if not cands:
            raise Unroutable(f"no candidate backend is left (tried {sorted(skip)})")
        fit = [n for n in cands if self._fits(n, spec)]
        if not fit:
            raise Unroutable(self._unfit_reason(spec, cands))
        if len(fit) < len(cands):
            notes.append(f"{len(cands) - len(fit)} of {len(cands)} candidates too small")
        up = [n for n in fit if self._usable(n)]
        if len(up) < len(fit):
            notes.append(f"{len(fit) - len(up)} of {len(fit)} candidates down")
        pool = up or fit  # all down: wait on one of them rather than fail
        if not up:
            notes.append("all candidates down, waiting for one")
        local, why = self._local(spec, pool)
        if why:
            notes.insert(0, why)
            pool = local
        choice = min(pool, key=lambda n: (self._load(n), pool.index(n)))
        if len(pool) > 1:
            notes.append(f"least loaded ({self._load_text(choice)})")
        if choice in up:
            self._probe(choice)
        return Route(choice, f"routed to {choice}: " + ("; ".join(notes) or "only candidate"))

    def _fits(self, name: str, spec: TaskSpec) -> bool:
        lim = self.config.limits.get(name)
        res = spec.resources
        if lim is None or res is None:
            return True
        return not (
            (lim.cpu_cores is not None and (res.cpu_cores or 1) > lim.cpu_cores)
            or (lim.ram_gb is not None and (res.ram_gb or 0) > lim.ram_gb)
            or (lim.disk_gb is not None and (res.disk_gb or 0) > lim.disk_gb)
        )

    def _unfit_reason(self, spec: TaskSpec, cands: list[str]) -> str:
        res = spec.resources
        asked = {
            k: v
            for k, v in (
                res.model_dump(include={"cpu_cores", "ram_gb", "disk_gb"}) if res else {}
            ).items()
            if v is not None
        }
        limits = {
            n: self.config.limits[n].model_dump(exclude_none=True)
            for n in cands
            if n in self.config.limits
        }
        return f"no backend can hold resources {asked}; largest tasks: {limits}"

    def _local(self, spec: TaskSpec, pool: list[str]) -> tuple[list[str], str | None]:
        if not self.config.locality or not spec.inputs:
            return pool, None
        urls = [i.url for i in spec.inputs if i.url]
        counts: dict[str, int] = {}
        prefixes: dict[str, set[str]] = {}
        for url in urls:
            best = max(
                (p for p in self.config.locality if url.startswith(p)), key=len, default=None
            )
            if best is None:
                continue
            name = self.config.locality[best]
            if name in pool:
                counts[name] = counts.get(name, 0) + 1
                prefixes.setdefault(name, set()).add(best)
        if not counts:
            return pool, None
        top = max(counts.values())
        local = [n for n in pool if counts.get(n) == top]
        where = ", ".join(sorted(prefixes[local[0]]))
        return local, f"{top}/{len(spec.inputs)} inputs under {where}"

    def _capacity(self, name: str) -> int | None:
        return self.config.capacity.get(name) or self.capacity_of(name)

    def _load(self, name: str) -> float:
        active = self.active(name)
        cap = self._capacity(name)
        return active / cap if cap else float(active)

    def _load_text(self, name: str) -> str:
        cap = self._capacity(name)
        return f"{self.active(name)}/{cap} active" if cap else f"{self.active(name)} active"

    # -- failover --------------------------------------------------------------------------

    def _usable(self, name: str) -> bool:
        if not self.health(name):
            return False
        c = self._circuits.get(name)
        if c is None or c.opened_at is None:
            return True
        if c.probing:
            return False  # one probe at a time
        return self.clock() - c.opened_at >= self.config.cooldown

    def _probe(self, name: str) -> None:
        c = self._circuits.get(name)
        if c is not None and c.opened_at is not None:
            c.probing = True

    def succeeded(self, name: str) -> None:
        """A submit to ``name`` worked: its circuit closes."""
        self._circuits.pop(name, None)

    def failed(self, name: str) -> None:
        """A submit to ``name`` failed transiently."""
        c = self._circuits.setdefault(name, _Circuit())
        c.failures += 1
        if c.probing or c.failures >= self.config.failures:
            c.opened_at, c.probing = self.clock(), False

    def is_open(self, name: str) -> bool:
        c = self._circuits.get(name)
        return c is not None and c.opened_at is not None

    # -- load accounting -------------------------------------------------------------------

    def placed(self, job_id: str, backend: str) -> None:
        """``job_id`` (not final) is on ``backend`` (at submission, re-routing, start)."""
        old = self._placed.get(job_id)
        if old is not None:
            self._counts[old] -= 1
        self._placed[job_id] = backend
        self._counts[backend] = self._counts.get(backend, 0) + 1

    def active(self, name: str) -> int:
        return self._counts.get(name, 0)

    def observe(self, event: Any) -> None:
        """A store event: a job that reached a final state no longer loads its backend."""
        if State(event.to_state) in FINAL:
            old = self._placed.pop(event.job_id, None)
            if old is not None:
                self._counts[old] -= 1


def make_router(config: RoutingConfig | None, backends: Mapping[str, Any]) -> Router | None:
    """The router of the configured ``backends`` (None without a routing section)."""
    if config is None:
        return None
    return Router(
        config,
        list(backends),
        health=lambda n: bool(backends[n].healthy()),
        capacity_of=lambda n: getattr(backends[n], "capacity", None) or backends[n].slots,
    )
