"""The Slurm backend: sbatch a generated script, poll squeue in batches, scancel.

Task directories live under ``shared_dir/jobs`` (the dispatcher stages inputs there
before submission, outputs from there afterwards); the node runner
(``python -m jobgate.runner.node``) writes ``result.json`` beside them. A job's final
status comes from that file and from Slurm's state (one table, ``states.py``), so it
survives the job leaving ``squeue``.

Never submitting twice: before sbatch runs, ``submission.json`` in the task directory
records the Slurm job name (``jg-<job id>``, or ``jg-array-<list id>`` plus the element
index). A gateway that crashed between sbatch and recording the id, or an sbatch whose
reply was lost ("Socket timed out"), finds the job again by that name in squeue, or by
``started.json``, which the node runner writes with its Slurm id when it starts.

Job arrays: submissions that arrive within ``array_window`` seconds of each other and
whose sbatch options are equal (same resources, partition, account, ...) share one
``sbatch --array``; their scripts would differ only by the task directory, which the
node runner reads from line ``$SLURM_ARRAY_TASK_ID`` of a list file instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobgate.backends.base import Backend, BackendStatus, SubmitError
from jobgate.backends.slurm import parse, script
from jobgate.backends.slurm.commands import SlurmCommands
from jobgate.backends.slurm.ratelimit import TokenBucket
from jobgate.backends.slurm.states import lookup
from jobgate.domain.models import ExecutorLog, Job, JobRecord
from jobgate.domain.states import State
from jobgate.runner.node import NODE_FILE, RESULT_FILE, STARTED_FILE, write_json
from jobgate.runner.taskdir import TaskDir

log = logging.getLogger(__name__)

SUBMISSION_FILE = "submission.json"
SCRIPT_FILE = "job.sh"
MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001
QUERY_CHUNK = 1000  # job ids per squeue call (argv stays small)
NAME_PREFIX = "jg-"
PARALLEL_SUBMITS = 4  # sbatch calls in flight at once


@dataclass
class _Pending:
    job_id: str
    taskdir: TaskDir
    options: tuple[str, ...]
    future: asyncio.Future[str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SlurmConfig:
    """Options of one Slurm backend (from the settings or a config file)."""

    shared_dir: Path
    python: str
    runtime: str = "auto"
    slurm_conf: str | None = None
    defaults: script.Defaults = field(default_factory=script.Defaults)
    submit_rate: float = 20.0
    submit_burst: int = 40
    array_window: float = 0.05
    submit_patience: float = 600.0
    max_array: int = MAX_ARRAY
    log_tail_bytes: int = 64 * 1024
    keep_files: bool = False
    """Keep array list files and Slurm's own output after jobs end (debugging)."""
    runtime_options: dict[str, Any] = field(default_factory=dict)
    """The gateway's container settings (image map, user, limits…) for the node runner."""


class SlurmBackend(Backend):
    """Hands jobs to a Slurm cluster; Slurm queues them (``slots`` is None)."""

    kind = "slurm"
    parameter_keys = script.PARAMETER_KEYS
    min_poll_interval = 0.5  # one squeue per half second at most, however busy

    def __init__(self, config: SlurmConfig, *, name: str = "slurm") -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.commands = SlurmCommands(config.slurm_conf)
        self.task_root = config.shared_dir / "jobs"
        self.jobs_dir = self.task_root
        self.arrays_dir = config.shared_dir / "arrays"
        self.bucket = TokenBucket(config.submit_rate, config.submit_burst)
        self._jobs: dict[str, str] = {}  # native id → jobgate id (its task dir's name)
        self._arrays: dict[str, set[str]] = {}  # array dir name → elements not yet forgotten
        self._array_of: dict[str, str] = {}  # array element id → its array dir name
        self._pending: list[_Pending] = []
        self._kick = asyncio.Event()
        self._inflight = asyncio.Semaphore(PARALLEL_SUBMITS)
        self._script: Path | None = None
        self._script_lock = asyncio.Lock()
        self._batcher: asyncio.Task[None] | None = None
        self.sbatch_calls = 0

    # -- the contract ------------------------------------------------------------------

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        return script.check_parameters(params)

    async def submit(self, job: Job, taskdir: TaskDir) -> str:
        try:
            options = script.options(job, self.config.defaults)
        except ValueError as exc:
            raise SubmitError(str(exc)) from exc
        node = {
            "job": job.model_dump(mode="json", exclude_none=True),
            "runtime": self.config.runtime,
            "runtime_options": self.config.runtime_options,
            "log_tail_bytes": self.config.log_tail_bytes,
        }
        # No fsync here or below: these files must outlive a crash of the gateway process
        # (the page cache does), not of the machine, and fsync costs ~6 ms per file.
        await asyncio.to_thread(write_json, taskdir.base / NODE_FILE, node, sync=False)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(job.id, taskdir, options, fut))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._batch_loop(), name=f"sbatch-{self.name}")
        self._kick.set()
        return await fut

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        results = await asyncio.to_thread(self._read_results, native_ids)
        # A clean result decides alone; Slurm is asked about everything else in one call.
        ask = [nid for nid in native_ids if not _decisive(results.get(nid))]
        queue: dict[str, parse.QueueEntry] | None = {}
        if ask:
            queue = await self._squeue(ask)
        out = {}
        for nid in native_ids:
            status = self._status(nid, results.get(nid), queue)
            if status is not None:
                out[nid] = status
        return out

    async def cancel(self, native_id: str) -> None:
        res = await self.commands.run("scancel", [native_id])
        if res.returncode != 0:
            log.warning("scancel %s failed: %s", native_id, parse.error_text(res.stderr))
        self.changed.set()

    async def known_ids(self) -> list[str]:
        res = await self.commands.run("squeue", ["-h", "-r", "-o", parse.NAMES_FORMAT])
        if res.returncode != 0:
            raise RuntimeError(f"squeue failed: {parse.error_text(res.stderr)}")
        return [nid for nid, _, name in parse.squeue_names(res.stdout) if name.startswith("jg-")]

    async def reattach(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """Jobs of an earlier gateway run that Slurm (or their result file) still knows.

        Jobs with a recorded native id are all taken back: poll settles each (running,
        finished with a result, or gone → SYSTEM_ERROR). Jobs without one were being
        submitted when the gateway stopped: found by their Slurm job name or by the id
        the node runner wrote, they are adopted; otherwise they were never submitted.
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
            by_name = await self._ids_by_name(names)
            for job_id, sub in unsure.items():
                ids = by_name.get(str(sub["name"]), [])
                nid = _element(ids, sub.get("index"))
                if nid is None:
                    nid = sub.get("started_id")
                if nid:
                    adopted[job_id] = str(nid)
        for job_id, nid in adopted.items():
            self._jobs[nid] = job_id
        return adopted

    def forget(self, native_id: str) -> None:
        self._jobs.pop(native_id, None)
        list_id = self._array_of.pop(native_id, None)
        members = self._arrays.get(list_id or "")
        if list_id is None or members is None:
            return
        members.discard(native_id)
        if not members:
            # The last element is settled: its list file and Slurm output go.
            del self._arrays[list_id]
            if not self.config.keep_files:
                path = self.arrays_dir / list_id
                asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(shutil.rmtree, path, ignore_errors=True)
                )

    def native_metadata(self, native_id: str) -> dict[str, str]:
        return {"slurm_job_id": native_id}

    def describe(self) -> dict[str, str]:
        facts = {"backend": self.name, "type": "slurm", "runtime": self.config.runtime}
        if self.commands.slurm_conf:
            facts["slurm_conf"] = self.commands.slurm_conf
        return facts

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
            size = max(1, min(self.config.max_array, MAX_ARRAY))
            chunks = [
                (options, members[i : i + size])
                for options, members in groups.items()
                for i in range(0, len(members), size)
            ]
            # A few sbatch calls in flight hide the file writes and the controller's
            # round trip; the token bucket still bounds the rate.
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
        python = self.config.python
        if len(members) == 1:
            p = members[0]
            base = p.taskdir.base
            # The name is the job's own (reattach finds it without a submission file).
            name = f"{NAME_PREFIX}{p.job_id}"
            args = [
                *options,
                f"--job-name={name}",
                f"--output={base / 'slurm.out'}",
                f"--chdir={base}",
            ]
            return [await self._sbatch(args, await self._single_script(), name, [str(base)])]
        list_id = uuid.uuid4().hex
        adir = self.arrays_dir / list_id
        name = f"{NAME_PREFIX}array-{list_id}"
        path = adir / SCRIPT_FILE

        def prepare_array() -> None:
            adir.mkdir(parents=True, exist_ok=True)
            listing = adir / "taskdirs"
            listing.write_text("".join(f"{p.taskdir.base}\n" for p in members), "utf-8")
            path.write_text(script.body(python, ["--list", str(listing)]), encoding="utf-8")
            for i, p in enumerate(members):
                sub = {"name": name, "index": i}
                write_json(p.taskdir.base / SUBMISSION_FILE, sub, sync=False)

        await asyncio.to_thread(prepare_array)
        args = [
            *options,
            f"--array=0-{len(members) - 1}",
            f"--job-name={name}",
            f"--output={adir / '%a.out'}",
            f"--chdir={adir}",
        ]
        array_id = await self._sbatch(args, path, name)
        ids = [f"{array_id}_{i}" for i in range(len(members))]
        self._arrays[list_id] = set(ids)
        self._array_of.update(dict.fromkeys(ids, list_id))
        return ids

    async def _single_script(self) -> Path:
        """The shared script of single jobs, written once (named by its content, so
        gateways with different pythons sharing a directory don't clash)."""
        async with self._script_lock:
            return await self._write_single_script()

    async def _write_single_script(self) -> Path:
        if self._script is None:
            text = script.single_body(self.config.python)
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

    async def _sbatch(
        self, args: list[str], path: Path, name: str, script_args: Sequence[str] = ()
    ) -> str:
        """One sbatch, retried while the controller says "later".

        Never twice: after a failure whose outcome is unknown ("Socket timed out": the
        request may have reached the controller), the job is looked up by name until the
        controller answers twice that it has none; only then is sbatch run again.
        """
        deadline = time.monotonic() + self.config.submit_patience
        delay = 1.0
        argv = ["--parsable", *args, str(path), *script_args]
        unsure = False  # an earlier attempt may have created the job
        empty_answers = 0
        message = ""
        while True:
            if unsure:
                try:
                    found = (await self._ids_by_name([name])).get(name)
                except Exception as exc:
                    message = f"looking the job up after a lost reply failed: {exc}"
                    empty_answers = 0
                else:
                    if found:
                        return found[0].split("_", 1)[0]
                    empty_answers += 1
                # Twice empty, a moment apart: a request still queued in the controller
                # would have been handled by then.
                unsure = empty_answers < 2
            if not unsure:
                await self.bucket.take()
                self.sbatch_calls += 1
                res = await self.commands.run("sbatch", argv)
                if res.returncode == 0:
                    try:
                        return parse.sbatch_id(res.stdout)
                    except parse.ParseError as exc:
                        raise SubmitError(str(exc)) from exc
                message = parse.error_text(res.stderr)
                if not parse.is_transient(res.stderr):
                    raise SubmitError(f"sbatch refused the job: {message}")
                if parse.is_rate_limited(res.stderr):
                    self.bucket.pause(delay)
                unsure = parse.is_ambiguous(res.stderr)
                empty_answers = 0
            if time.monotonic() + delay > deadline:
                raise SubmitError(
                    f"sbatch kept failing for {self.config.submit_patience:g}s: {message}",
                    transient=True,
                )
            log.warning("sbatch: %s; retrying in %.0fs", message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    # -- status ------------------------------------------------------------------------

    def _taskdir(self, native_id: str) -> Path | None:
        job_id = self._jobs.get(native_id)
        return None if job_id is None else self.task_root / job_id

    def _read_results(self, native_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for nid in native_ids:
            base = self._taskdir(nid)
            if base is None:
                continue
            try:
                data = json.loads((base / RESULT_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            # A result from an earlier attempt's Slurm job is not this one's.
            if data.get("native_id") in (None, nid):
                out[nid] = data
        return out

    async def _squeue(self, native_ids: Sequence[str]) -> dict[str, parse.QueueEntry] | None:
        """Slurm's view of ``native_ids`` (absent: Slurm no longer knows the job), or None
        when the controller did not answer."""
        out: dict[str, parse.QueueEntry] = {}
        for i in range(0, len(native_ids), QUERY_CHUNK):
            chunk = native_ids[i : i + QUERY_CHUNK]
            args = ["-h", "-r", "-t", "all", "-j", ",".join(chunk), "-o", parse.STATUS_FORMAT]
            res = await self.commands.run("squeue", args)
            if res.returncode != 0:
                if parse.unknown_ids(res.stderr):
                    continue  # none of this chunk exists any more
                log.warning("squeue failed: %s", parse.error_text(res.stderr))
                return None
            out.update(parse.squeue_status(res.stdout))
        return out

    def _status(
        self,
        nid: str,
        result: dict[str, Any] | None,
        queue: dict[str, parse.QueueEntry] | None,
    ) -> BackendStatus | None:
        meta = {**self.describe(), **self.native_metadata(nid)}
        if result is not None and _decisive(result):
            return _from_result(result, meta)
        if queue is None:  # controller unreachable: keep waiting
            return BackendStatus(State.RUNNING, metadata=meta, detail="Slurm is not answering")
        entry = queue.get(nid)
        if entry is None:
            if nid not in self._jobs:
                return None
            if result is not None:
                status = _from_result(result, meta)
                status.state = State.SYSTEM_ERROR
                status.detail = (
                    f"the task was stopped by {result.get('signal')} and Slurm no longer knows "
                    f"job {nid}, so why is unknown (canceled, time limit or preemption)"
                )
                status.system_logs.append(status.detail)
                return status
            why = (
                f"Slurm no longer knows job {nid} and it left no result in the shared "
                "directory (purged before it ran, or the node lost the files)"
            )
            return BackendStatus(State.SYSTEM_ERROR, system_logs=[why], metadata=meta, detail=why)
        row = lookup(entry.state)
        reason = "" if entry.reason in ("", "None", "(null)") else entry.reason
        said = f"Slurm: {entry.state}" + (f" ({reason})" if reason else "")
        meta["slurm_state"] = entry.state
        if row.state is None:
            return BackendStatus(State.RUNNING, metadata=meta, detail=f"{row.why}; {said}")
        logs: list[ExecutorLog] = []
        system = []
        if result is not None:
            logs = [ExecutorLog.model_validate(e) for e in result.get("executor_logs", [])]
            system = list(result.get("system_logs", []))
        detail = f"{row.why} ({said})"
        system.append(detail)
        if row.trust_result and result is None:
            tail = self._slurm_output(nid)
            if tail:
                system.append(f"batch job output: {tail}")
        return BackendStatus(row.state, logs, system, meta, detail)

    def _slurm_output(self, nid: str) -> str:
        """The end of what the batch script itself printed (why the runner never ran)."""
        base = self._taskdir(nid)
        candidates = [base / "slurm.out"] if base is not None else []
        list_id = self._array_of.get(nid)
        if list_id is not None:
            candidates.append(self.arrays_dir / list_id / f"{nid.split('_')[1]}.out")
        for path in candidates:
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 2000))
                return f.read().decode("utf-8", "replace").strip()
        return ""

    # -- lookups -----------------------------------------------------------------------

    async def _ids_by_name(self, names: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in range(0, len(names), QUERY_CHUNK):
            chunk = names[i : i + QUERY_CHUNK]
            res = await self.commands.run(
                "squeue",
                ["-h", "-r", "-t", "all", "--name", ",".join(chunk), "-o", parse.NAMES_FORMAT],
            )
            if res.returncode != 0:
                raise RuntimeError(f"squeue failed: {parse.error_text(res.stderr)}")
            for nid, _state, name in parse.squeue_names(res.stdout):
                out.setdefault(name, []).append(nid)
        return out

    def _submission_of(self, job_id: str) -> dict[str, Any] | None:
        base = self.task_root / job_id
        sub: dict[str, Any]
        try:
            sub = json.loads((base / SUBMISSION_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            if not (base / NODE_FILE).exists():
                return None  # submit() was never reached
            sub = {"name": f"{NAME_PREFIX}{job_id}", "index": None}  # a single job
        with contextlib.suppress(OSError, ValueError):
            started = json.loads((base / STARTED_FILE).read_text("utf-8"))
            sub["started_id"] = started.get("native_id")
        return sub


def _decisive(result: dict[str, Any] | None) -> bool:
    """A result the node runner wrote after its executors ended on their own."""
    return result is not None and not result.get("signal")


def _element(ids: list[str], index: object) -> str | None:
    if not ids:
        return None
    if index is None:
        return ids[0]
    for nid in ids:
        if nid.endswith(f"_{index}"):
            return nid
    return None


def _from_result(result: dict[str, Any], meta: dict[str, str]) -> BackendStatus:
    state = State(result.get("state", State.SYSTEM_ERROR.value))
    if state == State.RUNNING:  # cannot be final: the runner died mid-way
        state = State.SYSTEM_ERROR
    meta = dict(meta)
    if result.get("host"):
        meta["node"] = str(result["host"])
    if result.get("partition"):
        meta["slurm_partition"] = str(result["partition"])
    return BackendStatus(
        state,
        [ExecutorLog.model_validate(e) for e in result.get("executor_logs", [])],
        list(result.get("system_logs", [])),
        meta,
    )
