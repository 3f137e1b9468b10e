"""The local backend: runs tasks on this machine within a fixed number of CPU slots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from collections.abc import Sequence
from pathlib import Path

from jobgate.backends.base import Backend, BackendStatus, SubmitContext, SubmitError
from jobgate.domain.models import Job
from jobgate.domain.states import State
from jobgate.runner.executors import TaskRun
from jobgate.runner.uids import NoFreeUid, TaskUids
from jobgate.runtimes.base import Mount, Runtime
from jobgate.runtimes.cgroups import CgroupLayout

log = logging.getLogger(__name__)

JOB_SOCKET = "/.jobgate/job.sock"
"""Where a sandboxed executor finds the gateway's job socket (``JOBGATE_JOB_SOCKET``)."""


class LocalBackend(Backend):
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
    ) -> None:
        """``task_root``: where the gateway stages task directories; ``uids``: the host
        uids tasks run as, one per running task (None: the service's own); ``max_pids``:
        processes one executor may hold (None: no limit); ``job_socket``: the gateway's
        job socket, shown to bubblewrap executors at :data:`JOB_SOCKET` while it exists."""
        super().__init__()
        self.name = name
        self.task_root = task_root
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
        swept = self.cgroups.sweep()
        if swept:
            log.warning("killed %d processes left over by an earlier run", swept)
        removed = runtime.sweep()
        if removed:
            log.warning("removed %d containers left over by an earlier run", removed)
        self._runs: dict[str, tuple[TaskRun, asyncio.Task[object]]] = {}
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
        )
        task = asyncio.create_task(run.run(), name=f"run-{job.id}")
        if run_as is not None and self.uids is not None:
            uids, uid = self.uids, run_as[0]
            task.add_done_callback(lambda _: uids.release(uid))
        self._runs[job.id] = (run, task)
        return job.id

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
        self._runs.pop(native_id, None)

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
