"""The native job description: a TES task plus what grid and HPC users expect.

``script`` becomes one executor running ``/bin/sh -c``; ``labels`` are the task's tags
(one concept, visible to TES clients too); ``parameters`` expand one description into many
jobs (see :func:`expand`).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from pydantic import Field, HttpUrl, field_validator, model_validator

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

    def values(self) -> list[int]:
        return list(range(self.start, self.stop, self.step))


ParamValues = list[str | int | float] | RangeParam


class JobRequest(TaskSpec):
    """One job as submitted to ``/api/v1/jobs`` (JSON or YAML)."""

    executors: list[Executor] = Field(default_factory=list)
    script: str | None = None
    image: str | None = None
    """Image for ``script`` (default: the runtime's own)."""
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    backend: str | None = None
    labels: dict[str, str] | None = None
    callback: HttpUrl | None = None
    hold: bool = False
    """Create the job held (PAUSED): upload its files, then start it."""
    output_sandbox: list[str] | None = Field(default=None, max_length=1000)
    """Container paths or globs packed into a tar.gz sandbox when the job ends."""

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if not key:
                raise ValueError("label keys must not be empty")
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


def combinations(parameters: dict[str, ParamValues], cap: int) -> list[dict[str, Any]]:
    """The cartesian product of the parameter values, in declaration order.

    Raises :class:`TooManyJobs` when it would exceed ``cap`` (checked before expanding).
    """
    lists = [p.values() if isinstance(p, RangeParam) else list(p) for p in parameters.values()]
    total = 1
    for values in lists:
        total *= len(values)
    if total > cap:
        raise TooManyJobs(f"the parameters expand to {total} jobs; the limit is {cap}")
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
