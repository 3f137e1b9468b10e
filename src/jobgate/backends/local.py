"""The local backend: runs tasks on this machine within a fixed number of CPU slots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from jobgate.backends.base import Backend, BackendStatus
from jobgate.domain.models import Job
from jobgate.domain.states import State
from jobgate.runner.executors import TaskRun
from jobgate.runner.taskdir import TaskDir
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.cgroups import CgroupLayout

log = logging.getLogger(__name__)


class LocalBackend(Backend):
    def __init__(
        self, runtime: Runtime, *, slots: int, log_tail_bytes: int, name: str = "local"
    ) -> None:
        super().__init__()
        self.name = name
        self.runtime = runtime
        self.slots = slots
        self.log_tail_bytes = log_tail_bytes
        self.cgroups = CgroupLayout.detect()
        swept = self.cgroups.sweep()
        if swept:
            log.warning("killed %d processes left over by an earlier run", swept)
        removed = runtime.sweep()
        if removed:
            log.warning("removed %d containers left over by an earlier run", removed)
        self._runs: dict[str, tuple[TaskRun, asyncio.Task[object]]] = {}
        self._metadata = runtime.describe()  # fixed for the runtime's life: built once

    def cost(self, job: Job) -> int:
        # A task asking for more cores than the machine has still runs, on all of them.
        return min(job.cpu_cores, self.slots or 1)

    async def submit(self, job: Job, taskdir: TaskDir) -> str:
        run = TaskRun(
            job,
            taskdir,
            self.runtime,
            self.cgroups,
            log_tail_bytes=self.log_tail_bytes,
            on_change=self.changed.set,
        )
        task = asyncio.create_task(run.run(), name=f"run-{job.id}")
        self._runs[job.id] = (run, task)
        return job.id

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
        return {"backend": self.name, **self.runtime.describe()}

    async def close(self) -> None:
        for run, task in list(self._runs.values()):
            run.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._runs.clear()
        self.cgroups.close()
