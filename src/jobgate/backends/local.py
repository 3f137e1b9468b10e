"""The local backend: runs tasks on this machine within a fixed number of CPU slots.

Runs outlive the process that started them, and another process adopts them:

- **Who owns a run.** Each backend instance (process) is an *owner*, named by its pid and
  the process's start time (``t<ticks>-<pid>``: a reused pid names another owner). It
  keeps a state directory ``<state root>/<backend name>/<owner>/`` with one entry per run
  it holds (a file named by the job id: the executors' environment and the task uid),
  written before its first executor starts and removed once the dispatcher has recorded
  the final state (:meth:`LocalBackend.forget`); its executors' cgroups live in a subtree
  of its own (``jobgate-<owner>``). An owner that no longer runs is *dead*: its runs are
  adoptable, and nothing at start-up (:meth:`CgroupLayout.sweep`, the runtime's sweep)
  kills them, nor anything of a live owner.
- **What a run says of itself.** Each executor records its outcome in the task directory
  (``TaskDir.mark``: started, exit status), written by the wrapper in front of it, which
  never starts an executor whose start is recorded (see ``runner/executors.py``).
- **Adoption.** :meth:`LocalBackend.reattach` is given every active job of this backend
  (by recovery, after a restart or for a dead peer's jobs). For a dead owner's entry of one
  of them it moves the entry into its own state directory (a rename: of several adopters,
  one wins) and continues the run from its records: waits for a running executor, takes
  the log of one that ended, starts those that never did; an executor started but ended
  without a status (killed while nobody watched) makes the task SYSTEM_ERROR, never a
  rerun. A dead owner's run whose job is not among them (no longer active) is killed,
  with its cgroups. A job canceled while its owner was down is adopted like any other,
  and the dispatcher's cancel then kills it: CANCELED, with the logs of what ran.
- **A clean stop** (:meth:`LocalBackend.close`) kills its runs and drops their entries:
  recovery then runs them again, as it does for jobs no backend holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, ClassVar

from jobgate.backends.base import Backend, BackendStatus, SubmitContext, SubmitError
from jobgate.domain.models import Job, JobRecord
from jobgate.domain.states import State
from jobgate.runner.executors import TaskRun, kill_wrapper, open_wrapper, read_marks
from jobgate.runner.taskdir import TaskDir
from jobgate.runner.uids import NoFreeUid, TaskUids
from jobgate.runtimes.base import Mount, Runtime
from jobgate.runtimes.cgroups import CgroupLayout, ResourceGroup, owner_alive, owner_token

log = logging.getLogger(__name__)

JOB_SOCKET = "/.jobgate/job.sock"
"""Where a sandboxed executor finds the gateway's job socket (``JOBGATE_JOB_SOCKET``)."""


class LocalBackend(Backend):
    reattach_always: ClassVar[bool] = True

    def __init__(
        self,
        runtime: Runtime,
        *,
        slots: int,
        log_tail_bytes: int,
        name: str = "local",
        task_root: Path,
        uids: TaskUids | None = None,
        max_pids: int | None = None,
        job_socket: Path | None = None,
        state_root: Path | None = None,
    ) -> None:
        """``task_root``: where the gateway stages task directories; ``uids``: the host
        uids tasks run as, one per running task (None: the service's own); ``max_pids``:
        processes one executor may hold (None: no limit); ``job_socket``: the gateway's
        job socket, shown to bubblewrap executors at :data:`JOB_SOCKET` while it exists;
        ``state_root``: where owners keep their state directories (see the module
        docstring; default: ``<task_root>.runs`` beside it); every process that may adopt
        another's runs must be given the same ``task_root`` and ``state_root``."""
        super().__init__()
        self.name = name
        self.task_root = task_root
        self._task_root = task_root
        self.runtime = runtime
        self.slots = slots
        self.log_tail_bytes = log_tail_bytes
        self.uids = uids
        self.max_pids = max_pids
        self.socket_file = job_socket
        if uids is not None and uids.count < slots:
            log.warning(
                "%d task uids for %d slots: tasks beyond %d at once fail (JOBGATE_TASK_UID_COUNT)",
                uids.count,
                slots,
                uids.count,
            )
        self.cgroups = CgroupLayout.detect()
        root = state_root or task_root.with_name(f"{task_root.name}.runs")
        self.owners = root / name
        self.state_dir = self.owners / owner_token()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        swept = self.cgroups.sweep()
        if swept:
            log.warning("killed %d processes left over by an earlier run", swept)
        # Containers of runs some owner holds stay: live ones' run, dead ones' may be adopted.
        removed = runtime.sweep(keep=self._held(alive_only=False))
        if removed:
            log.warning("removed %d containers left over by an earlier run", removed)
        self._runs: dict[str, tuple[TaskRun, asyncio.Task[object]]] = {}
        self._elsewhere: set[str] = set()  # jobs live dispatchers drive (leave_alone)
        self._metadata = runtime.describe()  # fixed for the runtime's life: built once

    def job_socket(self, job: Job) -> str | None:
        # Only into a sandbox without network (the process runtime has the host's, and
        # its task uids could not reach the closed data dir); only once the server listens.
        if self.runtime.name != "bwrap" or self.socket_file is None:
            return None
        try:
            listening = stat.S_ISSOCK(self.socket_file.stat().st_mode)
        except OSError:
            listening = False
        return JOB_SOCKET if listening else None

    def cost(self, job: Job) -> int:
        # A task asking for more cores than the machine has still runs, on all of them.
        return min(job.cpu_cores, self.slots or 1)

    async def submit(self, job: Job, ctx: SubmitContext) -> str:
        if ctx.taskdir is None:
            raise SubmitError("the local backend needs a staged task directory")
        taskdir = ctx.taskdir
        run_as = None
        if self.uids is not None:
            try:
                run_as = self.uids.lease()
            except NoFreeUid as exc:
                raise SubmitError(str(exc)) from None
        entry = json.dumps(
            {"run_as": run_as, "env": [ex.env or {} for ex in job.executors]}
        ).encode()
        path = f"{self.state_dir}/{job.id}"
        run = TaskRun(
            job,
            taskdir,
            self.runtime,
            self.cgroups,
            log_tail_bytes=self.log_tail_bytes,
            on_change=self.changed.set,
            run_as=run_as,
            max_pids=self.max_pids,
            mounts=self._socket_mounts(job),
            before_start=lambda: _write_entry(path, entry),
        )
        self._start(job.id, run)
        return job.id

    def _start(self, job_id: str, run: TaskRun) -> None:
        task = asyncio.create_task(run.run(), name=f"run-{job_id}")
        if run.run_as is not None and self.uids is not None:
            uids, uid = self.uids, run.run_as[0]
            task.add_done_callback(lambda _: uids.release(uid))
        self._runs[job_id] = (run, task)

    def leave_alone(self, job_ids: Collection[str]) -> None:
        self._elsewhere = set(job_ids)

    async def reattach(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """Adopt the runs dead owners left of ``records`` (every active job of this
        backend), kill their runs of other jobs; job id → native id (the job id) of the
        runs adopted (see the module docstring)."""
        wanted = {r.id: r for r in records}
        claimed, stale = await asyncio.to_thread(self._claim, set(wanted))
        adopted = {}
        for job_id, entry in claimed.items():
            rec = wanted[job_id]
            try:
                job = rec.to_job()
                for ex, env in zip(job.executors, entry.get("env") or [], strict=False):
                    ex.env = env or None
                run_as = entry.get("run_as")
                run_as = (int(run_as[0]), int(run_as[1])) if run_as else None
            except Exception:
                # Not left running unwatched: recovery runs the job again (or fails it).
                log.exception("cannot adopt the run of job %s; killing it", job_id)
                await asyncio.to_thread(self._drop, job_id, stale.get(job_id, []))
                continue
            if run_as is not None and self.uids is not None:
                self.uids.claim(run_as[0])
            run = TaskRun(
                job,
                TaskDir(self._task_root / job_id),
                self.runtime,
                self.cgroups,
                log_tail_bytes=self.log_tail_bytes,
                on_change=self.changed.set,
                run_as=run_as,
                max_pids=self.max_pids,
                mounts=self._socket_mounts(job),
                adopted=True,
                stale_groups=stale.get(job_id, []),
            )
            self._start(job_id, run)
            adopted[job_id] = job_id
        if adopted:
            log.warning("adopted %d runs of processes that died", len(adopted))
        return adopted

    def _claim(self, wanted: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """In a thread: take over dead owners' entries; those of ``wanted`` jobs are
        returned (job id → entry), with the dead owners' cgroup directories of each;
        the others are killed, as are dead owners' cgroups no live owner holds."""
        claimed: dict[str, dict[str, Any]] = {}
        dead = [
            o
            for o in _listdir(self.owners)
            if o.name != self.state_dir.name and not owner_alive(o.name)
        ]
        # Only owners of this state root: another deployment's runs are not ours to settle.
        groups = self.cgroups.dead_groups({o.name for o in dead})
        reaped = 0
        for owner in dead:
            for entry in _listdir(owner):
                if entry.name in self._elsewhere:
                    continue  # another live dispatcher adopts it
                mine = self.state_dir / entry.name
                try:
                    os.rename(entry, mine)  # of several adopters, one wins
                except OSError:
                    continue
                if entry.name in wanted:
                    try:
                        claimed[entry.name] = json.loads(mine.read_bytes())
                        continue
                    except (OSError, ValueError):
                        log.exception("unreadable run state %s", mine)
                reaped += self._reap(entry.name)
                mine.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                owner.rmdir()  # only once empty: entries left for others stay
        # After the claims: a run another adopter took meanwhile is listed as live now.
        held = self._held(alive_only=True)
        stale: dict[str, list[str]] = {}
        for name, dirs in groups.items():
            job_id = name.rsplit("-", 1)[0]
            if job_id in claimed:
                stale.setdefault(job_id, []).extend(dirs)
            elif job_id not in held and job_id not in self._elsewhere:
                group = ResourceGroup(self.cgroups.version, dirs, None)
                reaped += group.kill_all()
                group.remove(patience=1.0)
        self.cgroups.remove_dead_subtrees()
        try:
            reaped += self.runtime.sweep(keep=held)
        except Exception:  # the engine is unreachable: its next sweep cleans up
            log.exception("could not remove the containers of runs no longer active")
        if reaped:
            log.warning("killed %d processes of runs whose jobs are no longer active", reaped)
        return claimed, stale

    def _held(self, *, alive_only: bool) -> set[str]:
        """Job ids of the runs owners of this state root hold (only live owners')."""
        owners = _listdir(self.owners)
        return {
            e.name for o in owners if not alive_only or owner_alive(o.name) for e in _listdir(o)
        }

    def _drop(self, job_id: str, dirs: list[str]) -> None:
        """Kill a claimed run (its processes, its cgroups) and drop its entry."""
        self._reap(job_id)
        group = ResourceGroup(self.cgroups.version, dirs, None)
        group.kill_all()
        group.remove(patience=1.0)
        with contextlib.suppress(OSError):
            os.unlink(f"{self.state_dir}/{job_id}")

    def _reap(self, job_id: str) -> int:
        """Kill what still runs of a dead owner's run outside cgroups (by its records)."""
        td = TaskDir(self._task_root / job_id)
        killed = 0
        index = 0
        while (marks := read_marks(td, index)) is not None:
            if marks.status is None:
                pidfd = open_wrapper(marks.pid, td.mark(index, "started"))
                if pidfd is not None:
                    kill_wrapper(pidfd, marks.pid)
                    os.close(pidfd)
                    killed += 1
            index += 1
        return killed

    def _socket_mounts(self, job: Job) -> list[Mount]:
        if self.socket_file is None or self.job_socket(job) is None:
            return []
        return [Mount(self.socket_file, JOB_SOCKET)]

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        out = {}
        for nid in native_ids:
            entry = self._runs.get(nid)
            if entry is None:
                continue
            run, task = entry
            result = run.result
            state = result.state
            if task.done() and state == State.RUNNING:
                state = State.SYSTEM_ERROR  # the run died without deciding: a bug, say so
                exc = None if task.cancelled() else task.exception()
                result.system_logs.append(f"local runner failed: {exc!r}")
            out[nid] = BackendStatus(
                state=state,
                executor_logs=list(result.executor_logs),
                system_logs=list(result.system_logs),
                metadata=dict(self._metadata),
            )
        return out

    async def cancel(self, native_id: str) -> None:
        entry = self._runs.get(native_id)
        if entry is not None:
            entry[0].cancel()

    async def known_ids(self) -> list[str]:
        return list(self._runs)

    def forget(self, native_id: str) -> None:
        if self._runs.pop(native_id, None) is not None:
            with contextlib.suppress(OSError):
                os.unlink(f"{self.state_dir}/{native_id}")

    def describe(self) -> dict[str, str]:
        facts = {"backend": self.name, **self.runtime.describe()}
        if self.uids is not None:
            facts["task_uids"] = self.uids.describe()
        if self.max_pids:
            facts["max_pids"] = str(self.max_pids)
        return facts

    async def close(self) -> None:
        for run, task in list(self._runs.values()):
            run.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._runs.clear()
        self.cgroups.close()
        # Killed: none of them is anyone's to adopt; recovery runs them again.
        for entry in _listdir(self.state_dir):
            entry.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()


def _write_entry(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []
