"""A job's lifecycle policy: automatic retries, per-state timeouts, heartbeat watching.

Native jobs give it as fields (``retry``, ``timeouts``, ``heartbeat_timeout``), TES tasks
as ``resources.backend_parameters`` (:data:`PARAMETER_KEYS`). The policy in force (the
job's own values, else the operator's defaults, checked against the operator's maxima) is
stored once, at submission, under :data:`LIFECYCLE_KEY` in the job's spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from jobgate.domain import limits as lim
from jobgate.domain.models import _Model
from jobgate.domain.states import State

LIFECYCLE_KEY = "_lifecycle"
"""Stored-spec key of the policy in force (hidden from clients)."""

STALLED = "STALLED"
"""The retry cause of a job that stopped sending heartbeats (a flag on RUNNING, not a
state: TES clients know only the TES states)."""

RETRY_CAUSES = frozenset({State.SYSTEM_ERROR.value, State.PREEMPTED.value, STALLED})
"""What is retried when a job asks for retries but names no causes."""
ALLOWED_CAUSES = RETRY_CAUSES | {State.EXECUTOR_ERROR.value}

TIMED_STATES = ("queued", "initializing", "running")
TIMEOUT_STATE = {
    State.QUEUED: "queued",
    State.INITIALIZING: "initializing",
    State.RUNNING: "running",
}
TIMEOUT_END = {
    "queued": State.SYSTEM_ERROR,
    "initializing": State.SYSTEM_ERROR,
    # Like a scheduler's own time limit (Slurm TIMEOUT): the task ran too long.
    "running": State.EXECUTOR_ERROR,
}
"""The state a job ends in when it exceeds its time in one state."""

PARAMETER_KEYS = frozenset(
    {
        "retries",
        "retry_on",
        "retry_backoff",
        "queued_timeout",
        "initializing_timeout",
        "running_timeout",
        "heartbeat_timeout",
    }
)
"""TES ``backend_parameters`` keys of the policy (every backend understands them)."""

Seconds = float


class Retry(_Model):
    """Native ``retry``: resubmit on the listed causes, up to ``count`` times."""

    count: lim.Int = Field(default=0, ge=0)
    on: list[str] | None = Field(default=None, max_length=8)
    """SYSTEM_ERROR, PREEMPTED, STALLED, EXECUTOR_ERROR (default: the first three)."""
    backoff: float | None = Field(default=None, ge=0, le=86_400, allow_inf_nan=False)
    """Seconds before the first retry; doubled for each further one."""


class Timeouts(_Model):
    """Native ``timeouts``: most seconds a job may spend in each state."""

    queued: float | None = Field(default=None, gt=0, le=lim.GB, allow_inf_nan=False)
    initializing: float | None = Field(default=None, gt=0, le=lim.GB, allow_inf_nan=False)
    running: float | None = Field(default=None, gt=0, le=lim.GB, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class Limits:
    """The operator's defaults and maxima (``JOBGATE_*`` settings; 0: none)."""

    max_retries: int = 3
    default_retries: int = 0
    default_retry_on: tuple[str, ...] = tuple(sorted(RETRY_CAUSES))
    retry_backoff: float = 10.0
    default_timeouts: Mapping[str, float] = field(default_factory=dict)
    max_timeouts: Mapping[str, float] = field(default_factory=dict)
    heartbeat_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class Policy:
    """The policy in force for one job."""

    retries: int = 0
    retry_on: tuple[str, ...] = ()
    backoff: float = 10.0
    timeouts: Mapping[str, float] = field(default_factory=dict)
    heartbeat_timeout: float | None = None

    @property
    def watched(self) -> bool:
        """Whether the dispatcher must watch the job's clock (a timeout or heartbeats)."""
        return bool(self.timeouts) or self.heartbeat_timeout is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.retries:
            out.update(retries=self.retries, retry_on=list(self.retry_on), backoff=self.backoff)
        if self.timeouts:
            out["timeouts"] = dict(self.timeouts)
        if self.heartbeat_timeout is not None:
            out["heartbeat_timeout"] = self.heartbeat_timeout
        return out

    @classmethod
    def of_spec(cls, spec: Mapping[str, Any]) -> Policy:
        """The stored policy of a job (none: no retries, no timeouts)."""
        raw = spec.get(LIFECYCLE_KEY)
        if not isinstance(raw, dict):
            return cls()
        return cls(
            retries=int(raw.get("retries", 0)),
            retry_on=tuple(raw.get("retry_on", ())),
            backoff=float(raw.get("backoff", 10.0)),
            timeouts={k: float(v) for k, v in (raw.get("timeouts") or {}).items()},
            heartbeat_timeout=(
                None if raw.get("heartbeat_timeout") is None else float(raw["heartbeat_timeout"])
            ),
        )

    def retry_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1, 2, …): the backoff, doubled each time."""
        return float(min(self.backoff * 2 ** (retry - 1), 3600.0))

    def timeout_of(self, state: State) -> tuple[str, float] | None:
        name = TIMEOUT_STATE.get(state)
        if name is None or name not in self.timeouts:
            return None
        return name, self.timeouts[name]


def walltime(seconds: float) -> str:
    """A time limit for a batch scheduler a little above ``seconds`` (H:MM:SS, which
    Slurm's ``--time`` and Grid Engine's ``h_rt`` both read), so that the gateway's own
    timeout, with its reason, normally fires first; the scheduler's is the safety net."""
    total = math.ceil(seconds / 60) * 60 + 60
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def _number(value: str) -> float:
    x = float(value)
    if not math.isfinite(x) or x < 0:
        raise ValueError(value)
    return x


def resolve(
    limits: Limits,
    *,
    retry: Retry | None = None,
    timeouts: Timeouts | None = None,
    heartbeat_timeout: float | None = None,
    params: Mapping[str, str] | None = None,
    where: str = "body",
) -> tuple[Policy, list[dict[str, str]]]:
    """The policy in force from a job's own fields (``retry``…, native) or backend
    parameters (``params``, TES; keys lower-cased), and the errors (``{where, what}``)."""
    errors: list[dict[str, str]] = []
    bp = f"{where}.resources.backend_parameters"
    count: int | None = retry.count if retry is not None else None
    causes = None if retry is None or retry.on is None else list(retry.on)
    backoff = None if retry is None else retry.backoff
    wanted: dict[str, float] = {}
    if timeouts is not None:
        wanted = {k: getattr(timeouts, k) for k in TIMED_STATES if getattr(timeouts, k)}
    hb = heartbeat_timeout
    p = params or {}

    def number(key: str) -> float | None:
        if key not in p:
            return None
        try:
            return _number(p[key])
        except ValueError:
            errors.append({"where": f"{bp}.{key}", "what": "expected a number of seconds ≥ 0"})
            return None

    if "retries" in p:
        n = number("retries")
        if n is not None and n != int(n):
            errors.append({"where": f"{bp}.retries", "what": "expected a whole number"})
        elif n is not None:
            count = int(n)
    if "retry_on" in p:
        causes = [c.strip().upper() for c in p["retry_on"].split(",") if c.strip()]
    backoff = number("retry_backoff") if "retry_backoff" in p else backoff
    for name in TIMED_STATES:
        value = number(f"{name}_timeout")
        if value:
            wanted[name] = value
    if "heartbeat_timeout" in p:
        hb = number("heartbeat_timeout")
    where_retry = f"{bp}.retries" if "retries" in p else f"{where}.retry.count"
    if count is None:
        count = limits.default_retries
    elif count > limits.max_retries:
        errors.append(
            {
                "where": where_retry,
                "what": f"at most {limits.max_retries} retries (JOBGATE_MAX_RETRIES)",
            }
        )
    if causes is not None:
        bad = sorted(set(causes) - ALLOWED_CAUSES)
        if bad:
            errors.append(
                {
                    "where": f"{bp}.retry_on" if "retry_on" in p else f"{where}.retry.on",
                    "what": f"unknown causes {bad}; allowed: {sorted(ALLOWED_CAUSES)}",
                }
            )
    for name, most in limits.max_timeouts.items():
        if most and name in wanted and wanted[name] > most:
            loc = f"{bp}.{name}_timeout" if f"{name}_timeout" in p else f"{where}.timeouts.{name}"
            errors.append(
                {
                    "where": loc,
                    "what": f"at most {most:g} seconds (JOBGATE_MAX_{name.upper()}_TIMEOUT)",
                }
            )
    for name, default in limits.default_timeouts.items():
        if default and name not in wanted:
            wanted[name] = default
    if hb is None and limits.heartbeat_timeout:
        hb = limits.heartbeat_timeout
    policy = Policy(
        retries=count,
        retry_on=tuple(sorted(set(causes if causes is not None else limits.default_retry_on))),
        backoff=limits.retry_backoff if backoff is None else backoff,
        timeouts=wanted,
        heartbeat_timeout=hb or None,
    )
    return policy, errors
