"""Parsers for what qsub, qstat, qdel and qacct print. Pure functions over text.

Native ids: ``"123"`` for a single job, ``"123.4"`` for task 4 of array job 123 (Grid
Engine numbers array tasks from 1). Formats are those of Son of Grid Engine 8.1 (Debian's
``gridengine-*`` packages); the tests hold real captured output.

``qstat -xml`` is parsed with the standard library's ElementTree. It is the output of a
local command that talks only to the site's qmaster, not input from a network peer, and
ElementTree (expat) expands no external entities; it does expand internal ones, which a
qmaster never emits.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

_JOB_NUMBER = re.compile(r"[1-9]\d*")
_NATIVE_ID = re.compile(r"([1-9]\d*)(?:\.([1-9]\d*))?")
# "1-5:1", "7", or lists of both: "1,3,6-9:1" (pending tasks not yet expanded).
_RANGE = re.compile(r"([1-9]\d*)(?:-([1-9]\d*)(?::([1-9]\d*))?)?")
MAX_TASKS = 75000  # Grid Engine's default max_aj_tasks; larger ranges are not believed

# qmaster answers that mean "try again later", not "this job is wrong".
TRANSIENT = (
    "unable to contact qmaster",
    "unable to send message to qmaster",
    "commlib error",
    "can't connect",
    "cannot connect",
    "connection refused",
    "connection reset",
    "got send error",
    "got read error",
    "got select error",
    "got no message",
    "failed receiving gdi request",
    "timed out",
    "timeout",
    "qmaster is currently not available",
    "error while connecting",
    "jobs are allowed per",  # max_u_jobs / max_jobs reached: room comes back
)
# Failures after the request may have reached the qmaster: the job may exist.
AMBIGUOUS = (
    "got no message",  # sent, but no reply came
    "failed receiving gdi request",
    "got read error",
    "connection reset",
    "timed out",
    "timeout",
)


class ParseError(ValueError):
    """Grid Engine printed something this module does not understand."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """What ``qsub -terse`` printed: the job number and, for an array, its task ids."""

    job_number: str
    tasks: tuple[int, ...] = ()

    @property
    def native_ids(self) -> list[str]:
        """``["123"]`` for a single job, ``["123.1", "123.2", ...]`` for an array."""
        if not self.tasks:
            return [self.job_number]
        return [f"{self.job_number}.{t}" for t in self.tasks]


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One job or array task as ``qstat -xml`` lists it."""

    native_id: str
    job_number: str
    task: int | None
    name: str
    state: str
    """Grid Engine's state letters, e.g. ``qw``, ``hqw``, ``r``, ``Eqw``, ``dr``."""
    queue: str
    """``queue@host`` while it runs, empty while it waits."""
    slots: int


@dataclass(slots=True)
class JobDetail:
    """What ``qstat -j`` says about one job that qstat -xml does not."""

    job_number: str
    name: str = ""
    error_reasons: list[str] = field(default_factory=list)
    """Why the job (or a task of it) is in error state E, newest last."""
    scheduling_info: list[str] = field(default_factory=list)
    """Why the scheduler has not started it (when ``schedd_job_info`` is on)."""


@dataclass(frozen=True, slots=True)
class AccountingRecord:
    """One finished job or task from ``qacct -j``."""

    native_id: str
    name: str
    failed: int
    """0, or Grid Engine's failure code (e.g. 37: a limit was enforced, 100: killed)."""
    failed_reason: str
    exit_status: int
    hostname: str


def native_id(text: str) -> tuple[str, int | None]:
    """``"123"`` → ("123", None), ``"123.4"`` → ("123", 4)."""
    m = _NATIVE_ID.fullmatch(text.strip())
    if not m:
        raise ParseError(f"not a Grid Engine job id: {text!r}")
    return m.group(1), int(m.group(2)) if m.group(2) else None


def expand_tasks(text: str) -> list[int]:
    """Task ids of a range list as qsub and qstat print them: ``1-5:1``, ``2,4,5``,
    ``1,3-7:2``."""
    out: list[int] = []
    for part in text.strip().split(","):
        m = _RANGE.fullmatch(part.strip())
        if not m:
            raise ParseError(f"unexpected task range {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3)) if m.group(3) else 1
        if hi < lo or (hi - lo) // step + 1 + len(out) > MAX_TASKS:
            raise ParseError(f"unexpected task range {text!r}")
        out.extend(range(lo, hi + 1, step))
    return out


def qsub_terse(stdout: str) -> Submitted:
    """``qsub -terse`` prints ``123`` for a job and ``123.1-5:1`` for an array."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    number, _, tasks = last.partition(".")
    if not _JOB_NUMBER.fullmatch(number):
        raise ParseError(f"qsub printed no job id: {stdout.strip()[:200]!r}")
    if not tasks:
        return Submitted(number)
    return Submitted(number, tuple(expand_tasks(tasks)))


def _text(elem: ET.Element, tag: str) -> str:
    child = elem.find(tag)
    return (child.text or "").strip() if child is not None else ""


def qstat_xml(stdout: str) -> dict[str, QueueEntry]:
    """The jobs of ``qstat -xml [-u USER]`` by native id.

    Running tasks come one ``job_list`` each; pending tasks of an array as one entry with a
    range in ``<tasks>`` (``2-5:1``, ``1,3,6``), which is expanded here, so every task has
    its entry. Jobs that ended are not listed at all.
    """
    try:
        root = ET.fromstring(stdout)
    except ET.ParseError as exc:
        raise ParseError(f"qstat printed no XML: {exc}: {stdout.strip()[:200]!r}") from exc
    if root.tag != "job_info":
        raise ParseError(f"unexpected qstat XML root <{root.tag}>")
    out: dict[str, QueueEntry] = {}
    for item in root.iter("job_list"):
        number = _text(item, "JB_job_number")
        if not _JOB_NUMBER.fullmatch(number):
            raise ParseError(f"qstat listed a job without a number: {number!r}")
        slots_text = _text(item, "slots")
        slots = int(slots_text) if slots_text.isdigit() else 0
        tasks_text = _text(item, "tasks")
        tasks: list[int | None] = list(expand_tasks(tasks_text)) if tasks_text else [None]
        for task in tasks:
            nid = number if task is None else f"{number}.{task}"
            out[nid] = QueueEntry(
                native_id=nid,
                job_number=number,
                task=task,
                name=_text(item, "JB_name"),
                state=_text(item, "state"),
                queue=_text(item, "queue_name"),
                slots=slots,
            )
    return out


def unknown_jobs(output: str) -> list[str]:
    """The job numbers ``qstat -j`` says do not exist (from its stderr, ``Following jobs
    do not exist:`` then the list, or from ``qstat -xml -j``'s ``<unknown_jobs>``)."""
    text = output.strip()
    if text.startswith("<?xml") or text.startswith("<unknown_jobs"):
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            return []
        if root.tag != "unknown_jobs":
            return []
        return [(e.text or "").strip() for e in root.iter("ST_name") if (e.text or "").strip()]
    m = re.search(r"following jobs do not exist:?\s*(.*)", text, re.IGNORECASE | re.DOTALL)
    if not m:
        return []
    return [t for t in re.split(r"[\s,]+", m.group(1)) if _JOB_NUMBER.fullmatch(t)]


def job_details(stdout: str) -> dict[str, JobDetail]:
    """Blocks of ``qstat -j ID[,ID...]`` by job number: error reasons and scheduling
    info, the two things the XML listing lacks."""
    out: dict[str, JobDetail] = {}
    current: JobDetail | None = None
    key = ""
    for raw in stdout.splitlines():
        if raw.startswith("====="):
            current, key = None, ""
            continue
        if not raw.strip():
            continue
        if raw[:1].isspace():  # a continuation of the previous key's value
            value = raw.strip()
        else:
            name, sep, value = raw.partition(":")
            if not sep:
                continue
            key, value = name.strip(), value.strip()
            if key == "job_number":
                current = out.setdefault(value, JobDetail(value))
                continue
        if current is None:
            continue
        if key == "job_name":
            current.name = value
        elif key.startswith("error reason"):
            # "error reason    1:      12/02/2026 06:58:19 [0:21282]: error: can't chdir"
            current.error_reasons.append(_after_stamp(value))
        elif key == "scheduling info":
            current.scheduling_info.append(value)
    return out


def _after_stamp(value: str) -> str:
    m = re.match(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d \[[^\]]*\]:\s*(.*)", value)
    text = m.group(1) if m else value
    return re.sub(r"^error:\s*", "", text)


def qacct_records(stdout: str) -> list[AccountingRecord]:
    """Records of ``qacct -j ID`` (one per job or array task)."""
    records: list[AccountingRecord] = []
    block: dict[str, str] = {}

    def flush() -> None:
        if not block:
            return
        number = block.get("jobnumber", "")
        if not _JOB_NUMBER.fullmatch(number):
            raise ParseError(f"qacct record without a job number: {block}")
        task = block.get("taskid", "undefined")
        nid = number if not task.isdigit() else f"{number}.{task}"
        failed, _, reason = block.get("failed", "0").partition(":")
        status = block.get("exit_status", "0").split()[0]
        records.append(
            AccountingRecord(
                native_id=nid,
                name=block.get("jobname", ""),
                failed=int(failed.strip()) if failed.strip().isdigit() else -1,
                failed_reason=reason.strip(),
                exit_status=int(status) if status.lstrip("-").isdigit() else -1,
                hostname=block.get("hostname", ""),
            )
        )
        block.clear()

    for line in stdout.splitlines():
        if line.startswith("====="):
            flush()
            continue
        key, _, value = line.partition(" ")
        if key:
            block[key] = value.strip()
    flush()
    return records


def error_text(stderr: str) -> str:
    """The useful part of a Grid Engine error: ``Unable to run job: X`` gives X; else the
    last line that is not ``Exiting.``, without an ``error:`` prefix."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln != "Exiting."]
    for ln in reversed(lines):
        if ln.lower().startswith("unable to run job:"):
            return ln.split(":", 1)[1].strip()
    line = lines[-1] if lines else "(no message)"
    return re.sub(r"^(error|denied):\s*", "", line)


def is_transient(stderr: str) -> bool:
    """Whether the qmaster said "later" (or could not be reached) rather than "no"."""
    low = stderr.lower()
    return any(t in low for t in TRANSIENT)


def is_ambiguous(stderr: str) -> bool:
    """Whether a failed qsub may nevertheless have created the job."""
    low = stderr.lower()
    return any(t in low for t in AMBIGUOUS)
