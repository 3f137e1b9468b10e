"""The native job description: a TES task plus what grid and HPC users expect.

``script`` becomes one executor running ``/bin/sh -c``; ``labels`` are the task's tags
(one concept, visible to TES clients too); ``parameters`` expand one description into many
jobs (see :func:`expand`).
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any

from pydantic import Field, HttpUrl, field_validator, model_validator

from jobgate.domain import limits as lim
from jobgate.domain.lifecycle import Retry, Timeouts
from jobgate.domain.models import Executor, TaskSpec, _check_container_path, _Model

DEFAULT_IMAGE = "default"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MAX_PRIORITY = 1_000_000
_TASK_FIELDS = set(TaskSpec.model_fields)


class RangeParam(_Model):
    """Integers ``start, start+step, …`` below ``stop`` (like Python's ``range``)."""

    start: int = 0
    stop: int
    step: int = Field(default=1, ge=1)

    def values(self) -> range:
        return range(self.start, self.stop, self.step)

    def count(self) -> int:
        """How many values, computed without building them (``len(range)`` overflows)."""
        return max(0, -(-(self.stop - self.start) // self.step))


ParamValues = list[str | int | float] | RangeParam


class JobRequest(TaskSpec):
    """One job as submitted to ``/api/v1/jobs`` (JSON or YAML)."""

    executors: list[Executor] = Field(default_factory=list, max_length=lim.EXECUTORS)
    script: str | None = Field(default=None, max_length=lim.ARG)
    image: str | None = Field(default=None, max_length=lim.IMAGE)
    """Image for ``script`` (default: the runtime's own)."""
    priority: lim.Int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    backend: str | None = Field(default=None, max_length=lim.BACKEND_NAME)
    labels: lim.Tags | None = None
    callback: HttpUrl | None = None
    hold: lim.Flag = False
    """Create the job held (PAUSED): upload its files, then start it."""
    output_sandbox: list[Annotated[str, Field(max_length=lim.PATH)]] | None = Field(
        default=None, max_length=1000
    )
    """Container paths or globs packed into a tar.gz sandbox when the job ends."""
    retry: Retry | None = None
    """Resubmit automatically on SYSTEM_ERROR, PREEMPTED, STALLED (EXECUTOR_ERROR if named)."""
    timeouts: Timeouts | None = None
    """Most seconds in QUEUED, INITIALIZING (staging), RUNNING (walltime)."""
    heartbeat_timeout: float | None = Field(default=None, gt=0, le=lim.GB, allow_inf_nan=False)
    """Seconds without a heartbeat after which the RUNNING job is stalled."""

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if not key:
                raise ValueError("label keys must not be empty")
        return value

    @field_validator("callback")
    @classmethod
    def _callback(cls, value: HttpUrl | None) -> HttpUrl | None:
        # httpx would send the user name and password to the receiver as a Basic header.
        if value is not None and (value.username or value.password):
            raise ValueError("a callback URL must not carry a user name or password")
        return value

    @field_validator("output_sandbox")
    @classmethod
    def _output_sandbox(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_check_container_path(p) for p in value]

    @model_validator(mode="after")
    def _script_or_executors(self) -> JobRequest:
        if self.script is not None:
            if self.executors:
                raise ValueError("give either 'script' or 'executors', not both")
            self.executors = [
                Executor(image=self.image or DEFAULT_IMAGE, command=["/bin/sh", "-c", self.script])
            ]
        if not self.executors:
            raise ValueError("a job needs 'script' or at least one executor")
        if self.labels:
            self.tags = {**(self.tags or {}), **self.labels}
            if len(self.tags) > lim.TAGS:
                raise ValueError(f"more than {lim.TAGS} tags and labels together")
        return self

    def task_spec(self) -> dict[str, Any]:
        """The stored spec: the TES fields plus the native ones worth keeping."""
        # The TES fields only; one dump (re-validating as TaskSpec cost 3x as much).
        spec = self.model_dump(mode="json", exclude_none=True, include=_TASK_FIELDS)
        if self.script is not None:
            spec["script"] = self.script
        if self.callback is not None:
            spec["callback"] = str(self.callback)
        if self.output_sandbox:
            spec["output_sandbox"] = list(self.output_sandbox)
        return spec


class ParametricRequest(_Model):
    """A job template plus parameters; expanded server-side into one job per combination."""

    job: dict[str, Any]
    parameters: dict[str, ParamValues] = Field(min_length=1)

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, ParamValues]) -> dict[str, ParamValues]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"parameter name {name!r} is not an identifier")
        return value


class TooManyJobs(ValueError):
    pass


_BEYOND = 10**18


def combinations(parameters: dict[str, ParamValues], cap: int) -> list[dict[str, Any]]:
    """The cartesian product of the parameter values, in declaration order.

    Raises :class:`TooManyJobs` when it would exceed ``cap``: the count is computed from
    the ranges' bounds and the lists' lengths before anything is built.
    """
    counts = [p.count() if isinstance(p, RangeParam) else len(p) for p in parameters.values()]
    total = 0 if 0 in counts else 1
    for n in counts if total else ():
        total *= n
        if total > _BEYOND:
            break  # past any cap: no need to carry a huge number on
    if total > cap:
        size = f"more than {_BEYOND:.0e}" if total > _BEYOND else str(total)
        raise TooManyJobs(f"the parameters expand to {size} jobs; the limit is {cap}")
    if total == 0:
        return []  # an empty list or range: nothing to build (product would build the rest)
    lists = [p.values() if isinstance(p, RangeParam) else p for p in parameters.values()]
    names = list(parameters)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]


def substitute(template: Any, values: dict[str, Any]) -> Any:
    """Replace ``{{ name }}`` in every string of ``template`` (keys included).

    Unknown names are left as they are, so shell or Jinja text in scripts survives.
    """
    if isinstance(template, str):
        return PLACEHOLDER.sub(
            lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template
        )
    if isinstance(template, list):
        return [substitute(v, values) for v in template]
    if isinstance(template, dict):
        return {substitute(k, values): substitute(v, values) for k, v in template.items()}
    return template
