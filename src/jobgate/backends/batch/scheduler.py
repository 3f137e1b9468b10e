"""What every batch-scheduler backend does, whatever the scheduler: a subclass supplies
its commands, parsers and state table (:class:`BatchBackend`'s abstract methods).

Task directories live under ``shared_dir/jobs`` (the dispatcher stages inputs there
before submission, outputs from there afterwards); the node runner
(``python -m jobgate.runner.node``) writes ``result.json`` beside them. A job's final
status comes from that file and from the scheduler's state, so it survives the job
leaving the scheduler's queue (no accounting database needed).

Never submitting twice: before the submit command runs, ``submission.json`` in the task
directory records the scheduler job name (``jg-<job id>``, or ``jg-array-<list id>``
plus the element index). A gateway that crashed between submitting and recording the
id, or a submission whose reply was lost (a timeout), finds the job again by that name,
or by ``started.json``, which the node runner writes with its id when it starts. Only an
answer that the job does not exist, given twice a moment apart, allows submitting again.

Job arrays: submissions that arrive within ``array_window`` seconds of each other with
equal scheduler options (same resources, queue, account, ...) share one array job; their
scripts would differ only by the task directory, which the node runner reads from its
line of a list file instead.

Transient trouble (the controller is down, "try later", rate limits) is handed to the
dispatcher as ``SubmitError(transient=True)`` once the outcome is known: the job waits
in the gateway's queue and is submitted again later.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shlex
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from jobgate.backends.base import Backend, BackendStatus, SubmitContext, SubmitError
from jobgate.backends.batch.ratelimit import TokenBucket
from jobgate.domain.models import ExecutorLog, Job, JobRecord
from jobgate.domain.states import State
from jobgate.runner.nodefiles import (
    NODE_FILE,
    RESULT_FILE,
    STARTED_FILE,
    SUBMISSION_FILE,
    read_json,
    write_json,
)
from jobgate.runner.nodetask import RUNTIMES as NODE_RUNTIMES
from jobgate.runner.nodetask import task_fields
from jobgate.runner.taskdir import TaskDir

log = logging.getLogger(__name__)

NAME_PREFIX = "jg-"
PARALLEL_SUBMITS = 4  # submit commands in flight at once
SCRIPT_FILE = "job.sh"
SINGLE_OUTPUT = "batch.out"  # what the batch script itself prints, beside the task


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """Options every batch backend has (from the settings or a config file)."""

    shared_dir: Path
    python: str
    runtime: str = "auto"
    submit_rate: float = 20.0
    submit_burst: int = 40
    array_window: float = 0.05
    submit_patience: float = 600.0
    max_array: int = 1000
    log_tail_bytes: int = 64 * 1024
    keep_files: bool = False
    """Keep array list files and the scheduler's own output after jobs end (debugging)."""
    runtime_options: dict[str, Any] = field(default_factory=dict)
    """The gateway's container settings (image map, user, limits…) for the node runner."""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One job (or array element) as the scheduler lists it."""

    native_id: str
    state: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StateRow:
    """One row of a scheduler's state table."""

    state: State | None
    """The job state once the scheduler reports this; None while the job is active."""
    why: str
    """What happened, for the status detail and the task's system logs."""
    trust_result: bool = False
    """Whether a clean result file written by the node runner decides instead."""
    queued: bool = False
    """For active rows: waiting in the scheduler's queue (QUEUED), not running."""


class SchedulerError(Exception):
    """A scheduler command failed. ``transient``: "later" rather than "no";
    ``ambiguous``: the request may have reached the scheduler (the job may exist);
    ``rate_limited``: the scheduler asked us to slow down."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        ambiguous: bool = False,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.ambiguous = ambiguous
        self.rate_limited = rate_limited


@dataclass(frozen=True, slots=True)
class Submission:
    """One submit command: a single job, or an array of ``array_size`` elements."""

    options: tuple[str, ...]
    name: str
    script: Path
    workdir: Path
    script_args: tuple[str, ...] = ()
    array_size: int | None = None
    array_dir: Path | None = None
    """Arrays: where the elements' own output goes (:meth:`BatchBackend.element_output`).
    A single job's batch output goes to ``workdir / SINGLE_OUTPUT``."""


@dataclass
class _Pending:
    job_id: str
    taskdir: TaskDir
    options: tuple[str, ...]
    future: asyncio.Future[str] = field(repr=False)


class BatchBackend(Backend):
    """A batch scheduler's cluster; the scheduler queues the jobs (``slots`` is None)."""

    submitted_state = State.QUEUED
    scheduler: ClassVar[str] = "the scheduler"
    """The scheduler's name in messages ("Slurm", "Grid Engine")."""
    array_limit: ClassVar[int] = 1000
    """The largest array the scheduler takes by default."""
    query_chunk: ClassVar[int] = 1000
    """Ids per status query (argv stays small)."""
    queue_key: ClassVar[str] = "queue"
    """The task log metadata key naming the queue (partition) a job ran in."""
    state_key: ClassVar[str] = "scheduler_state"
    """The task log metadata key of the scheduler's state of a job."""

    def __init__(self, config: BatchConfig, *, name: str) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.jobs_root = config.shared_dir / "jobs"
        self.task_root = self.jobs_root
        self.arrays_dir = config.shared_dir / "arrays"
        self.submit_patience = config.submit_patience
        self.bucket = TokenBucket(config.submit_rate, config.submit_burst)
        self._jobs: dict[str, str] = {}  # native id → jobgate id (its task dir's name)
        self._arrays: dict[str, set[str]] = {}  # array dir name → elements not yet forgotten
        self._array_of: dict[str, str] = {}  # array element id → its array dir name
        self._last: dict[str, BackendStatus] = {}  # what the scheduler said last, per job
        # Jobs an earlier run was submitting whose lookup failed at reattach: job id → their
        # submission (name, index); looked up again before they are submitted anew.
        self._unsure: dict[str, dict[str, Any]] = {}
        self._pending: list[_Pending] = []
        self._kick = asyncio.Event()
        self._inflight = asyncio.Semaphore(PARALLEL_SUBMITS)
        self._script: Path | None = None
        self._script_lock = asyncio.Lock()
        self._batcher: asyncio.Task[None] | None = None
        self.submit_calls = 0

    # -- what a scheduler supplies --------------------------------------------------------

    @abc.abstractmethod
    def job_options(self, job: Job) -> tuple[str, ...]:
        """Submit options for ``job`` apart from its name, output and directory; jobs with
        equal options may share an array. Raises ValueError on an invalid value."""

    @abc.abstractmethod
    async def submit_script(self, sub: Submission) -> str:
        """Run the submit command; the job id (an array's id for arrays). Raises
        :class:`SchedulerError`."""

    @abc.abstractmethod
    def element_id(self, array_id: str, index: int) -> str:
        """The native id of element ``index`` (0-based) of array ``array_id``."""

    @abc.abstractmethod
    def element_output(self, array_dir: Path, index: int) -> Path:
        """Where element ``index`` of an array's batch script output goes."""

    @abc.abstractmethod
    async def query(self, native_ids: Sequence[str]) -> dict[str, QueueEntry] | None:
        """The scheduler's view of ``native_ids`` (absent: it no longer knows the job), or
        None when it did not answer."""

    @abc.abstractmethod
    async def ids_by_name(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Native ids of the jobs with these names (array elements expanded). Raises
        :class:`SchedulerError` when the scheduler does not answer."""

    @abc.abstractmethod
    async def all_ids(self) -> list[str]:
        """Native ids of every job jobgate submitted (named ``jg-…``) the scheduler knows."""

    @abc.abstractmethod
    async def kill(self, native_id: str) -> None:
        """Ask the scheduler to stop a job (errors are logged, not raised)."""

    @abc.abstractmethod
    def lookup(self, state: str) -> StateRow:
        """The state table's row for a state the scheduler printed."""

    # -- the contract ------------------------------------------------------------------

    async def submit(self, job: Job, ctx: SubmitContext) -> str:
        if ctx.taskdir is None:
            raise SubmitError(f"the {self.kind} backend needs a staged task directory")
        try:
            options = self.job_options(job)
        except ValueError as exc:
            raise SubmitError(str(exc)) from exc
        # Plain JSON with what the node runner needs: it reads it without pydantic. Only
        # container runtimes, which the node runs through the full TaskRun, need the Job.
        node: dict[str, Any] = {
            "task": task_fields(job),
            "runtime": self.config.runtime,
            "runtime_options": self.config.runtime_options,
            "log_tail_bytes": self.config.log_tail_bytes,
        }
        if self.config.runtime not in NODE_RUNTIMES:
            node["job"] = job.model_dump(mode="json", exclude_none=True)
        taskdir = ctx.taskdir
        # No fsync here or below: these files must outlive a crash of the gateway process
        # (the page cache does), not of the machine, and fsync costs ~6 ms per file.
        await asyncio.to_thread(write_json, taskdir.base / NODE_FILE, node, sync=False)
        if job.id in self._unsure:
            found = await self._resolve_unsure(job.id)
            if found is not None:
                return found
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(job.id, taskdir, options, fut))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._batch_loop(), name=f"submit-{self.name}")
        self._kick.set()
        return await fut

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        results = await asyncio.to_thread(self._read_results, native_ids)
        # A clean result decides alone; the scheduler is asked about the rest in one call.
        ask = [nid for nid in native_ids if not _decisive(results.get(nid))]
        queue: dict[str, QueueEntry] | None = {}
        if ask:
            queue = await self._query(ask)
            if queue is not None:
                # The runner writes its result before the batch job ends, so a result
                # missed by the read above (the job ended between the two) is there now.
                ended = [n for n in ask if self._ended(queue.get(n))]
                if ended:
                    results |= await asyncio.to_thread(self._read_results, ended)
        out = {}
        for nid in native_ids:
            status = self._status(nid, results.get(nid), queue)
            if status is not None:
                out[nid] = status
                if status.state in (State.QUEUED, State.RUNNING):
                    self._last[nid] = status
        return out

    async def cancel(self, native_id: str) -> None:
        await self.kill(native_id)
        self.changed.set()

    async def known_ids(self) -> list[str]:
        return await self.all_ids()

    async def reattach(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """Jobs of an earlier gateway run that the scheduler (or their result file) still
        knows.

        Jobs with a recorded native id are all taken back: poll settles each (running,
        finished with a result, or gone → SYSTEM_ERROR). Jobs without one were being
        submitted when the gateway stopped: found by their job name or by the id the
        node runner wrote, they are adopted; otherwise they were never submitted. When the
        scheduler does not answer that lookup, they are not adopted, and each is looked
        up again when it is submitted anew (:meth:`submit`), so it never runs twice.
        """
        adopted: dict[str, str] = {}
        unsure: dict[str, dict[str, Any]] = {}
        for rec in records:
            if rec.native_id:
                adopted[rec.id] = rec.native_id
                continue
            found = await asyncio.to_thread(self._submission_of, rec.id)
            if found is not None:
                unsure[rec.id] = found
        if unsure:
            names = sorted({str(s["name"]) for s in unsure.values()})
            try:
                by_name = await self.ids_by_name(names)
            except SchedulerError as exc:
                log.warning(
                    "%s: %s; %d jobs being submitted when the gateway stopped are looked up "
                    "again before they are submitted anew",
                    self.scheduler,
                    exc.message,
                    len(unsure),
                )
                by_name = {}
                self._unsure.update(unsure)
            for job_id, sub in unsure.items():
                ids = by_name.get(str(sub["name"]), [])
                nid = self._element(ids, sub.get("index"))
                if nid is None:
                    nid = sub.get("started_id")
                if nid:
                    adopted[job_id] = str(nid)
                    self._unsure.pop(job_id, None)
        for job_id, nid in adopted.items():
            self._jobs[nid] = job_id
        # Until the scheduler answers, the state the store recorded is the last one seen (a
        # silent controller must not turn a RUNNING job QUEUED after a restart).
        for rec in records:
            if rec.native_id and rec.state in (State.QUEUED, State.RUNNING):
                self._last.setdefault(rec.native_id, BackendStatus(rec.state))
        return adopted

    def forget(self, native_id: str) -> None:
        self._jobs.pop(native_id, None)
        self._last.pop(native_id, None)
        list_id = self._array_of.pop(native_id, None)
        members = self._arrays.get(list_id or "")
        if list_id is None or members is None:
            return
        members.discard(native_id)
        if not members:
            # The last element is settled: its list file and the scheduler's output go.
            del self._arrays[list_id]
            if not self.config.keep_files:
                path = self.arrays_dir / list_id
                asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(shutil.rmtree, path, ignore_errors=True)
                )

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._batcher
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(SubmitError("the gateway is stopping", transient=True))
        self._pending.clear()

    # -- submission --------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        while True:
            await self._kick.wait()
            if self.config.array_window:
                await asyncio.sleep(self.config.array_window)
            self._kick.clear()
            batch, self._pending = self._pending, []
            groups: dict[tuple[str, ...], list[_Pending]] = {}
            for p in batch:
                if not p.future.done():
                    groups.setdefault(p.options, []).append(p)
            size = max(1, min(self.config.max_array, self.array_limit))
            chunks = [
                (options, members[i : i + size])
                for options, members in groups.items()
                for i in range(0, len(members), size)
            ]
            # A few submissions in flight hide the file writes and the controller's round
            # trip; the token bucket still bounds the rate.
            done = await asyncio.gather(
                *(self._submit_chunk(o, c) for o, c in chunks), return_exceptions=True
            )
            for (_, chunk), outcome in zip(chunks, done, strict=True):
                if isinstance(outcome, BaseException):  # a bug: fail its jobs, keep going
                    log.error("submitting %d jobs failed: %r", len(chunk), outcome)
                    for p in chunk:
                        if not p.future.done():
                            p.future.set_exception(SubmitError(repr(outcome)))

    async def _submit_chunk(self, options: tuple[str, ...], chunk: list[_Pending]) -> None:
        async with self._inflight:
            try:
                ids = await self._submit_group(options, chunk)
            except Exception as exc:
                err = exc if isinstance(exc, SubmitError) else SubmitError(repr(exc))
                for p in chunk:
                    if not p.future.done():
                        p.future.set_exception(err)
                return
        for p, nid in zip(chunk, ids, strict=True):
            self._jobs[nid] = p.job_id
            if not p.future.done():
                p.future.set_result(nid)

    async def _submit_group(self, options: tuple[str, ...], members: list[_Pending]) -> list[str]:
        if len(members) == 1:
            p = members[0]
            base = p.taskdir.base
            # The name is the job's own (reattach finds it without a submission file).
            sub = Submission(
                options,
                f"{NAME_PREFIX}{p.job_id}",
                await self._single_script(),
                base,
                script_args=(str(base),),
            )
            return [await self._submit_once(sub)]
        list_id = uuid.uuid4().hex
        adir = self.arrays_dir / list_id
        name = f"{NAME_PREFIX}array-{list_id}"
        path = adir / SCRIPT_FILE

        def prepare_array() -> None:
            adir.mkdir(parents=True, exist_ok=True)
            listing = adir / "taskdirs"
            listing.write_text("".join(f"{p.taskdir.base}\n" for p in members), "utf-8")
            path.write_text(script_body(self.config.python, listing), encoding="utf-8")
            for i, p in enumerate(members):
                write_json(p.taskdir.base / SUBMISSION_FILE, {"name": name, "index": i}, sync=False)

        await asyncio.to_thread(prepare_array)
        sub = Submission(options, name, path, adir, array_size=len(members), array_dir=adir)
        array_id = await self._submit_once(sub)
        ids = [self.element_id(array_id, i) for i in range(len(members))]
        self._arrays[list_id] = set(ids)
        self._array_of.update(dict.fromkeys(ids, list_id))
        return ids

    async def _single_script(self) -> Path:
        """The shared script of single jobs, written once (named by its content, so
        gateways with different pythons sharing a directory don't clash)."""
        async with self._script_lock:
            if self._script is None:
                text = script_body(self.config.python, None)
                digest = hashlib.sha256(text.encode()).hexdigest()[:12]
                path = self.config.shared_dir / f"node-{digest}.sh"

                def write() -> None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.name}.{os.getpid()}")
                    tmp.write_text(text, encoding="utf-8")
                    os.replace(tmp, path)

                await asyncio.to_thread(write)
                self._script = path
            return self._script

    async def _submit_once(self, sub: Submission) -> str:
        """One submission, never twice.

        A refusal is a non-transient SubmitError. "Later" is a transient one, but only once
        the job is known not to exist: after a failure whose outcome is unknown (a
        timeout: the request may have reached the controller) the job is looked up by
        name until the controller answers twice that it has none, for up to
        ``submit_patience``.
        """
        deadline = time.monotonic() + self.config.submit_patience
        await self.bucket.take()
        self.submit_calls += 1
        try:
            return await self.submit_script(sub)
        except SchedulerError as exc:
            if exc.rate_limited:
                self.bucket.pause(2.0)
            if not exc.transient:
                raise SubmitError(f"{self.scheduler} refused the job: {exc.message}") from None
            if not exc.ambiguous:
                raise SubmitError(f"{self.scheduler}: {exc.message}", transient=True) from None
            message = exc.message
        delay = 1.0
        empty_answers = 0
        while True:
            await asyncio.sleep(delay)
            try:
                found = (await self.ids_by_name([sub.name])).get(sub.name)
            except SchedulerError as exc:
                message = f"looking the job up after a lost reply failed: {exc.message}"
                empty_answers = 0
            else:
                if found:
                    return self._array_id(found[0]) if sub.array_size else found[0]
                empty_answers += 1
                # Twice empty, a moment apart: a request still queued in the controller
                # would have been handled by then.
                if empty_answers >= 2:
                    raise SubmitError(f"{self.scheduler}: {message}", transient=True)
            if time.monotonic() + delay > deadline:
                # The job may exist: the task dir keeps its name, reattach may find it.
                raise SubmitError(
                    f"{self.scheduler} kept failing for {self.config.submit_patience:g}s after "
                    f"a lost reply: {message}"
                )
            log.warning("%s: %s; looking again in %.0fs", self.scheduler, message, delay)
            delay = min(delay * 2, 30.0)

    async def _resolve_unsure(self, job_id: str) -> str | None:
        """A job an earlier gateway run may have submitted (reattach could not look it up):
        the scheduler's id for it if it still waits in the queue (it will run the task
        directory staged anew), else None, once any such job is canceled. Raises a
        transient SubmitError while the scheduler does not answer."""
        sub = self._unsure[job_id]
        name = str(sub["name"])
        try:
            nid = self._element((await self.ids_by_name([name])).get(name, []), sub.get("index"))
        except SchedulerError as exc:
            raise SubmitError(f"{self.scheduler}: {exc.message}", transient=True) from None
        queue = {} if nid is None else await self._query([nid])
        if queue is None:
            raise SubmitError(f"{self.scheduler} is not answering", transient=True)
        del self._unsure[job_id]
        if nid is None:
            return None
        entry = queue.get(nid)
        if entry is not None and self.lookup(entry.state).queued:
            self._jobs[nid] = job_id
            return nid
        # Started or ended in a task directory since staged anew: it must not go on.
        await self.kill(nid)
        return None

    def _array_id(self, element: str) -> str:
        """The array id of one of its elements' ids (inverse of :meth:`element_id`)."""
        for sep in ("_", "."):
            if sep in element:
                return element.split(sep, 1)[0]
        return element

    def _element(self, ids: list[str], index: object) -> str | None:
        if not ids:
            return None
        if index is None:
            return ids[0]
        for nid in ids:
            if nid == self.element_id(self._array_id(nid), int(str(index))):
                return nid
        return None

    # -- status ------------------------------------------------------------------------

    def _ended(self, entry: QueueEntry | None) -> bool:
        return entry is None or self.lookup(entry.state).state is not None

    def _taskdir(self, native_id: str) -> Path | None:
        job_id = self._jobs.get(native_id)
        return None if job_id is None else self.jobs_root / job_id

    def _read_results(self, native_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for nid in native_ids:
            base = self._taskdir(nid)
            if base is None:
                continue
            data = read_json(base / RESULT_FILE)
            # A result from an earlier attempt's batch job is not this one's.
            if data is not None and data.get("native_id") in (None, nid):
                out[nid] = data
        return out

    async def _query(self, native_ids: Sequence[str]) -> dict[str, QueueEntry] | None:
        out: dict[str, QueueEntry] = {}
        for i in range(0, len(native_ids), self.query_chunk):
            part = await self.query(native_ids[i : i + self.query_chunk])
            if part is None:
                return None
            out.update(part)
        return out

    def _status(
        self,
        nid: str,
        result: dict[str, Any] | None,
        queue: dict[str, QueueEntry] | None,
    ) -> BackendStatus | None:
        meta = {**self.describe(), **self.native_metadata(nid)}
        if result is not None and _decisive(result):
            return self._from_result(result, meta)
        if queue is None:  # the controller is not answering: what it said last stands
            last = self._last.get(nid)
            state = last.state if last is not None else State.QUEUED
            said = f"{self.scheduler} is not answering"
            return BackendStatus(state, metadata=meta, detail=said)
        entry = queue.get(nid)
        if entry is None:
            if nid not in self._jobs:
                return None
            if result is not None:
                status = self._from_result(result, meta)
                status.state = State.SYSTEM_ERROR
                status.detail = (
                    f"the task was stopped by {result.get('signal')} and {self.scheduler} no "
                    f"longer knows job {nid}, so why is unknown (canceled, time limit or "
                    "preemption)"
                )
                status.system_logs.append(status.detail)
                return status
            why = (
                f"{self.scheduler} no longer knows job {nid} and it left no result in the "
                "shared directory (purged before it ran, or the node lost the files)"
            )
            return BackendStatus(State.SYSTEM_ERROR, system_logs=[why], metadata=meta, detail=why)
        row = self.lookup(entry.state)
        reason = "" if entry.reason in ("", "None", "(null)") else entry.reason
        said = f"{self.scheduler}: {entry.state}" + (f" ({reason})" if reason else "")
        meta[self.state_key] = entry.state
        if row.state is None:
            active = State.QUEUED if row.queued else State.RUNNING
            return BackendStatus(active, metadata=meta, detail=f"{row.why}; {said}")
        logs: list[ExecutorLog] = []
        system = []
        if result is not None:
            logs = [ExecutorLog.model_validate(e) for e in result.get("executor_logs", [])]
            system = list(result.get("system_logs", []))
        detail = f"{row.why} ({said})"
        system.append(detail)
        if row.trust_result and result is None:
            tail = self._batch_output(nid)
            if tail:
                system.append(f"batch job output: {tail}")
        return BackendStatus(row.state, logs, system, meta, detail)

    def _batch_output(self, nid: str) -> str:
        """The end of what the batch script itself printed (why the runner never ran)."""
        base = self._taskdir(nid)
        candidates = [base / SINGLE_OUTPUT] if base is not None else []
        list_id = self._array_of.get(nid)
        if list_id is not None:
            members = sorted(self._arrays.get(list_id, ()))
            with contextlib.suppress(ValueError):
                index = _index_in(nid, members, self)
                candidates.append(self.element_output(self.arrays_dir / list_id, index))
        for path in candidates:
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 2000))
                return f.read().decode("utf-8", "replace").strip()
        return ""

    def _from_result(self, result: dict[str, Any], meta: dict[str, str]) -> BackendStatus:
        state = State(result.get("state", State.SYSTEM_ERROR.value))
        if state not in (State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED):
            state = State.SYSTEM_ERROR  # RUNNING cannot be final: the runner died mid-way
        meta = dict(meta)
        if result.get("host"):
            meta["node"] = str(result["host"])
        if result.get("partition"):
            meta[self.queue_key] = str(result["partition"])
        return BackendStatus(
            state,
            [ExecutorLog.model_validate(e) for e in result.get("executor_logs", [])],
            list(result.get("system_logs", [])),
            meta,
        )

    # -- lookups -----------------------------------------------------------------------

    def _submission_of(self, job_id: str) -> dict[str, Any] | None:
        base = self.jobs_root / job_id
        sub = read_json(base / SUBMISSION_FILE)
        if sub is None:
            if not (base / NODE_FILE).exists():
                return None  # submit() was never reached
            sub = {"name": f"{NAME_PREFIX}{job_id}", "index": None}  # a single job
        started = read_json(base / STARTED_FILE)
        if started is not None:
            sub["started_id"] = started.get("native_id")
        return sub


def script_body(python: str, listing: Path | None) -> str:
    """The batch script: the shell is replaced by the node runner (signals reach it). A
    single job's task directory comes as ``$1`` (the submit command passes it), so all
    single jobs share one script; an array's element reads its line of ``listing``."""
    runner = shlex.join([python, "-m", "jobgate.runner.node"])
    where = '"$1"' if listing is None else shlex.join(["--list", str(listing)])
    return (
        "#!/bin/sh\n"
        "# Generated by jobgate: runs a task's executors on this node.\n"
        f"exec {runner} {where}\n"
    )


def _decisive(result: dict[str, Any] | None) -> bool:
    """A result the node runner wrote after its executors ended on their own."""
    return result is not None and not result.get("signal")


def _index_in(nid: str, members: Sequence[str], backend: BatchBackend) -> int:
    """The 0-based element index of ``nid`` in its array."""
    array = backend._array_id(nid)
    for i in range(max(len(members), backend.config.max_array)):
        if backend.element_id(array, i) == nid:
            return i
    raise ValueError(nid)
