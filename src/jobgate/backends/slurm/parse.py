"""Parsers for what sbatch, squeue and scancel print. Pure functions over text."""

from __future__ import annotations

import re

from jobgate.backends.batch.scheduler import QueueEntry

# Poll and reconcile use these squeue formats; fields are separated by "|", which Slurm
# never prints inside a job id, state or reason. The name comes last (it may hold "|").
STATUS_FORMAT = "%i|%T|%r"
NAMES_FORMAT = "%i|%T|%j"

_JOB_ID = re.compile(r"^\d+(_\d+)?$")

# Controller answers that mean "try again later", not "this job is wrong".
TRANSIENT = (
    "socket timed out",
    "submission rate too high",
    "unable to contact slurm controller",
    "temporarily unable to accept",
    "resource temporarily unavailable",
    "connection refused",
    "zero bytes were transmitted",
    "slurm controller not responding",
    "communication connection failure",
    "job violates accounting/qos policy (job submit limit",
)
RATE_LIMITED = ("submission rate too high", "socket timed out")
# Failures after the request may have reached the controller: the job may exist.
AMBIGUOUS = (
    "socket timed out",
    "zero bytes were transmitted",
    "communication connection failure",
    "timed out after",  # our own limit on the command (commands.py)
)


class ParseError(ValueError):
    """Slurm printed something this module does not understand."""


def sbatch_id(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` ("123" or "123;cluster")."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ParseError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


def squeue_status(stdout: str) -> dict[str, QueueEntry]:
    """Lines of ``squeue -h -r -o STATUS_FORMAT`` by job id (array elements as ``A_i``).

    A pending array range that squeue did not expand (``A_[3-5]``) yields one entry per
    element, so every element id is answered.
    """
    out: dict[str, QueueEntry] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|", 2)
        if len(parts) != 3:
            raise ParseError(f"unexpected squeue line: {line!r}")
        native_id, state, reason = (p.strip() for p in parts)
        for nid in expand_ids(native_id):
            out[nid] = QueueEntry(nid, state, reason)
    return out


def squeue_names(stdout: str) -> list[tuple[str, str, str]]:
    """(job id, state, job name) from ``squeue -h -r -o NAMES_FORMAT``."""
    rows = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 2)
        if len(parts) != 3:
            raise ParseError(f"unexpected squeue line: {line!r}")
        for nid in expand_ids(parts[0].strip()):
            rows.append((nid, parts[1].strip(), parts[2].strip()))
    return rows


def expand_ids(text: str) -> list[str]:
    """``123``, ``123_4``, or a range ``123_[1-3,7]`` (``123_[1-3%2]`` when throttled)."""
    if _JOB_ID.match(text):
        return [text]
    m = re.match(r"^(\d+)_\[([0-9,\-]+)(%\d+)?\]$", text)
    if not m:
        raise ParseError(f"unexpected job id {text!r}")
    base, ranges = m.group(1), m.group(2)
    out: list[str] = []
    for part in ranges.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(f"{base}_{i}" for i in range(int(lo), int(hi) + 1))
        elif part:
            out.append(f"{base}_{int(part)}")
    return out


def error_text(stderr: str) -> str:
    """The useful part of a Slurm error: the last ``error:`` line, without the prefix."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    line = (errors or lines or ["(no message)"])[-1]
    line = re.sub(r"^(sbatch|squeue|scancel|scontrol|slurm_\w+)( error)?:\s*", "", line)
    return re.sub(r"^error:\s*", "", line)


def is_transient(stderr: str) -> bool:
    """Whether the controller said "later" rather than "no"."""
    low = stderr.lower()
    return any(t in low for t in TRANSIENT)


def is_rate_limited(stderr: str) -> bool:
    low = stderr.lower()
    return any(t in low for t in RATE_LIMITED)


def is_ambiguous(stderr: str) -> bool:
    """Whether a failed sbatch may nevertheless have created the job."""
    low = stderr.lower()
    return any(t in low for t in AMBIGUOUS)


def unknown_ids(stderr: str) -> bool:
    """squeue's answer when none of the asked ids exists any more."""
    return "invalid job id specified" in stderr.lower()
