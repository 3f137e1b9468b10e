"""The batch script and sbatch options of one job: validated values only.

Nothing user-supplied is ever pasted into shell text. Options go to sbatch as separate
argv entries (no shell in between) and each value must match a strict pattern first; the
script body holds only the node python and paths, each ``shlex``-quoted. Executor
commands and environment travel in ``node.json`` (read by the node runner), never here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from jobgate.backends.batch import parameters
from jobgate.domain.models import Job

_NAME = r"[A-Za-z0-9_.\-]{1,64}"
PATTERNS: dict[str, re.Pattern[str]] = {
    "partition": re.compile(rf"{_NAME}(,{_NAME}){{0,15}}"),
    "account": re.compile(_NAME),
    "qos": re.compile(_NAME),
    "reservation": re.compile(rf"{_NAME}(,{_NAME}){{0,15}}"),
    # minutes | min:sec | h:m:s | d-h | d-h:m | d-h:m:s, or no limit.
    "time": re.compile(r"\d{1,7}(:\d{1,2}){0,2}|\d{1,4}-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE"),
    "constraint": re.compile(r"[A-Za-z0-9_.,:&|!()\[\]*@\-]{1,256}"),
    "nodes": re.compile(r"[1-9]\d{0,5}(-[1-9]\d{0,5})?"),
    "ntasks": re.compile(r"[1-9]\d{0,5}"),
    "gres": re.compile(r"[A-Za-z0-9_.:,\-]{1,256}"),
}
PARAMETER_KEYS = frozenset(PATTERNS)
"""backend_parameters keys a Slurm backend understands (besides ``backend``)."""

_HELP = {
    "partition": "Slurm partition name(s): letters, digits, _ . - (comma-separated)",
    "account": "Slurm account name: letters, digits, _ . -",
    "qos": "Slurm QOS name: letters, digits, _ . -",
    "reservation": "Slurm reservation name(s): letters, digits, _ . -",
    "time": "a Slurm time limit: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS",
    "constraint": "a Slurm feature expression (letters, digits, _ . , : & | ! ( ) [ ] * @ -)",
    "nodes": "a node count N or range MIN-MAX",
    "ntasks": "a positive task count",
    "gres": "a Slurm GRES list such as gpu:1 or gpu:a100:2",
}


def check_parameters(params: Mapping[str, str]) -> dict[str, str]:
    """Errors by key for values that don't match their pattern (keys we don't use pass)."""
    return parameters.check(params, PATTERNS, _HELP)


@dataclass(frozen=True, slots=True)
class Defaults:
    """Site defaults of one Slurm backend, used when a job names none."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None

    def __post_init__(self) -> None:
        errors = check_parameters(
            parameters.set_fields(self, ("partition", "account", "qos", "time"))
        )
        if errors:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in errors.items()))


def options(job: Job, defaults: Defaults) -> tuple[str, ...]:
    """sbatch options for ``job`` apart from its name, output and directory.

    Two jobs with equal options can share one job array. Raises ValueError on an invalid
    backend parameter (the API validates them first; this guards the stored ones).
    """
    res = job.resources
    params = {
        **parameters.set_fields(defaults, ("partition", "account", "qos", "time")),
        **parameters.of_job(job, PATTERNS, _HELP),
    }
    opts = [f"--cpus-per-task={job.cpu_cores}"]
    if res is not None and res.ram_gb is not None:
        opts.append(f"--mem={math.ceil(res.ram_gb * 1024)}M")
    if res is not None and res.disk_gb is not None:
        opts.append(f"--tmp={math.ceil(res.disk_gb * 1024)}M")
    for key in sorted(PARAMETER_KEYS):
        if key in params:
            opts.append(f"--{key}={params[key]}")
    return tuple(opts)
