"""The batch script and qsub options of one job: validated values only.

Nothing user-supplied is ever pasted into shell text. Options go to qsub as separate argv
entries (no shell in between) and each value must match a strict pattern first; the
script is the batch base's (``batch.scheduler.script_body``: the node python and fixed
arguments, ``shlex``-quoted; no line of it starts with ``#$``, which qsub would read as
options). Executor commands and environment travel in ``node.json``, never here.

What is never used: ``-V`` (it would hand the gateway's whole environment, with its
settings and credentials, to every job) and ``-v`` (the job's environment comes from
``node.json``); ``-notify`` (it sends SIGUSR2 ahead of a kill, which the node runner does
not expect).

Resources:

- ``cpu_cores`` N > 1 → ``-pe <pe> N`` (the site's parallel environment, default ``smp``,
  whose ``allocation_rule`` must be ``$pe_slots``: all slots on one host);
- ``ram_gb`` → ``-l h_vmem=<MiB>M`` (the resource is a site setting). Grid Engine counts
  memory requests **per slot** and multiplies them by the slots of a parallel job, so the
  job's total is divided by its cores (rounded up). ``h_vmem`` limits *virtual* memory
  (setrlimit), which is larger than the resident memory ``ram_gb`` means; a site whose
  nodes enforce memory otherwise may choose ``mem_free`` or ``m_mem_free`` instead, or
  none. The node runner's own cgroup limit enforces ``ram_gb`` where it can;
- ``disk_gb`` has no standard Grid Engine resource: it is not requested (see :func:`notes`);
- backend_parameters ``time`` → ``-l h_rt=``, ``queue`` → ``-q``, ``project`` → ``-P``,
  ``account`` → ``-A``, ``pe`` replaces the parallel environment, ``resources`` adds a
  ``-l`` list (e.g. ``gpu=1``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from jobgate.backends.batch import parameters
from jobgate.domain.models import Job

# Values go to qsub as the argument after their option: none may start with "-", which
# qsub would read as an option of its own.
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}"
_HOST = r"[A-Za-z0-9_*][A-Za-z0-9_.\-*]{0,254}"
_RESOURCE = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_RESOURCE_VALUE = r"[A-Za-z0-9_.:\-]{1,64}"
PATTERNS: dict[str, re.Pattern[str]] = {
    # A queue, queue@host, or a list of them (Grid Engine's wildcards in host names only).
    "queue": re.compile(rf"{_NAME}(@{_HOST})?(,{_NAME}(@{_HOST})?){{0,15}}"),
    "project": re.compile(_NAME),
    "account": re.compile(_NAME),
    "pe": re.compile(_NAME),
    # seconds, or h:m:s as Grid Engine's time values.
    "time": re.compile(r"\d{1,9}|\d{1,6}:\d{1,2}:\d{1,2}"),
    "resources": re.compile(
        rf"{_RESOURCE}={_RESOURCE_VALUE}(,{_RESOURCE}={_RESOURCE_VALUE}){{0,15}}"
    ),
}
PARAMETER_KEYS = frozenset(PATTERNS)
"""backend_parameters keys a Grid Engine backend understands (besides ``backend``)."""

_HELP = {
    "queue": "Grid Engine queue name(s), each optionally @host: letters, digits, _ . - "
    "(comma-separated)",
    "project": "Grid Engine project name: letters, digits, _ . -",
    "account": "Grid Engine account string: letters, digits, _ . -",
    "pe": "Grid Engine parallel environment name: letters, digits, _ . -",
    "time": "a Grid Engine run time limit (h_rt): SECONDS or H:MM:SS",
    "resources": "Grid Engine resource requests NAME=VALUE[,NAME=VALUE...] such as gpu=1",
}

# Fixed options of every submission. -terse: print only the id. -b n: the script is a
# script (qsub spools its text, so it need not be on a shared filesystem). -S: run it
# with /bin/sh, whatever the queue's shell. -w e: refuse at submit time a job no queue
# could ever run (rather than leave it waiting forever). -r n: never rerun a job by
# itself after an exec host failure (the gateway decides). -m n: no mail. -j y: one
# output file for stdout and stderr.
COMMON = ("-terse", "-b", "n", "-S", "/bin/sh", "-w", "e", "-r", "n", "-m", "n", "-j", "y")

_JOB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,199}")
# Grid Engine reads "host:path" and comma-separated lists in -o/-e, and expands $JOB_ID,
# $TASK_ID and a few more in them: paths we pass hold none of those characters, except
# the one pseudo variable we mean.
_PATH = re.compile(r"/[A-Za-z0-9_.\-/+=@%]{0,4000}")


def check_parameters(params: Mapping[str, str]) -> dict[str, str]:
    """Errors by key for values that don't match their pattern (keys we don't use pass)."""
    return parameters.check(params, PATTERNS, _HELP)


@dataclass(frozen=True, slots=True)
class Defaults:
    """Site defaults of one Grid Engine backend, used when a job names none."""

    queue: str | None = None
    project: str | None = None
    account: str | None = None
    time: str | None = None
    pe: str = "smp"
    """The parallel environment that gives a job ``cpu_cores`` slots on one host."""
    memory_resource: str | None = "h_vmem"
    """The per-slot resource ``ram_gb`` is requested as; None: memory is not requested."""

    def __post_init__(self) -> None:
        given = {
            "pe": self.pe,
            **parameters.set_fields(self, ("queue", "project", "account", "time")),
        }
        errors = check_parameters(given)
        if self.memory_resource is not None and not re.fullmatch(_RESOURCE, self.memory_resource):
            errors["memory_resource"] = (
                f"invalid value {self.memory_resource[:80]!r}: expected a resource name"
            )
        if errors:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in errors.items()))


def options(job: Job, defaults: Defaults) -> tuple[str, ...]:
    """qsub options for ``job`` apart from :data:`COMMON`, its name, output and directory.

    Two jobs with equal options can share one job array. Raises ValueError on an invalid
    backend parameter (the API validates them first; this guards the stored ones).
    """
    res = job.resources
    params = {
        **parameters.set_fields(defaults, ("queue", "project", "account", "time", "pe")),
        **parameters.of_job(job, PATTERNS, _HELP),
    }
    cores = job.cpu_cores
    opts: list[str] = []
    if cores > 1:
        opts += ["-pe", params["pe"], str(cores)]
    limits: list[str] = []
    if res is not None and res.ram_gb is not None and defaults.memory_resource is not None:
        per_slot = math.ceil(res.ram_gb * 1024 / cores)
        limits.append(f"{defaults.memory_resource}={max(per_slot, 1)}M")
    if "time" in params:
        limits.append(f"h_rt={params['time']}")
    if "resources" in params:
        limits.append(params["resources"])
    if limits:
        opts += ["-l", ",".join(limits)]
    if "queue" in params:
        opts += ["-q", params["queue"]]
    if "project" in params:
        opts += ["-P", params["project"]]
    if "account" in params:
        opts += ["-A", params["account"]]
    return tuple(opts)


def notes(job: Job) -> list[str]:
    """What of the job's resources Grid Engine is not asked for, for the job's events."""
    res = job.resources
    if res is not None and res.disk_gb is not None:
        return [
            f"disk_gb={res.disk_gb:g} is not requested from Grid Engine (it has no standard "
            "disk resource; a site can map one through backend_parameters.resources)"
        ]
    return []


def check_path(path: str) -> str:
    """``path`` if it is safe as a qsub ``-o``/``-wd`` value (absolute, none of the
    characters Grid Engine reads specially), else ValueError."""
    if not _PATH.fullmatch(path) or "/../" in f"{path}/":
        raise ValueError(f"unusable path for Grid Engine: {path[:200]!r}")
    return path


def placement(name: str, output: str, workdir: str, *, tasks: int | None = None) -> tuple[str, ...]:
    """``-N name -o output -wd workdir`` (and ``-t 1-N`` for an array of N tasks).

    ``output`` may hold the pseudo variable ``$TASK_ID`` (Grid Engine's per-task file
    name); it is the only ``$`` allowed.
    """
    if not _JOB_NAME.fullmatch(name):
        raise ValueError(f"unusable Grid Engine job name: {name[:200]!r}")
    check_path(output.replace("$TASK_ID", "TASK_ID"))
    opts = ["-N", name, "-o", output, "-wd", check_path(workdir)]
    if tasks is not None:
        if not 1 <= tasks <= 75000:
            raise ValueError(f"array of {tasks} tasks")
        opts += ["-t", f"1-{tasks}"]
    return tuple(opts)
