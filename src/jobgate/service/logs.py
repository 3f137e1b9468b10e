"""Executors' stdout/stderr: where they are while a job runs, where they are kept after,
and following them as they grow.

While a job runs, executor ``n`` writes ``TaskDir.log_file(n, "stdout")`` (``"stderr"``),
or the container path its ``stdout``/``stderr`` field names — the runner's rule, repeated
here. Before the job's final state is recorded the dispatcher keeps them as
``<logs dir>/<job id>/<n>.stdout``, so a job seen final has its logs in that place.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

from jobgate.domain.models import Executor, Job
from jobgate.domain.states import FINAL
from jobgate.errors import InvalidRequest, JobNotFound
from jobgate.runner.taskdir import TaskDir
from jobgate.service.events import EventBus, Overflow
from jobgate.store.jobs import JobStore

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
CHUNK = 64 * 1024


def open_beneath(root: Path, container_path: str) -> int | None:
    """A read-only descriptor of the regular file at ``container_path`` under ``root``.

    Walks one component at a time with ``O_NOFOLLOW``: a running executor that swaps a
    directory or its log file for a symlink cannot make us read a host file. None when
    the file is absent, is not a regular file, or a component is a symlink.
    """
    parts = [p for p in container_path.split("/") if p]
    if not parts or ".." in parts:
        return None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        out = os.open(parts[-1], flags, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        return None
    return out


def _open_plain(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def open_live(taskdir: TaskDir, executor: Executor, index: int, stream: Stream) -> int | None:
    """The running job's log file, or None if the executor has not created it yet."""
    custom = executor.stdout if stream == "stdout" else executor.stderr
    if custom:
        return open_beneath(taskdir.root, custom)
    return _open_plain(taskdir.log_file(index, stream))


def keep_logs(taskdir: TaskDir, executors: Sequence[Executor], dest: Path, *, copy: bool) -> None:
    """Put every executor's stdout/stderr into ``dest`` (``<n>.stdout``, ``<n>.stderr``),
    replacing an earlier attempt's. Moves the runner's own files unless ``copy``; copies
    files at executor-chosen paths (they are the task's own files)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for index, executor in enumerate(executors):
        for stream in STREAMS:
            target = dest / f"{index}.{stream}"
            custom = executor.stdout if stream == "stdout" else executor.stderr
            if not custom:
                src = taskdir.log_file(index, stream)
                with contextlib.suppress(FileNotFoundError):
                    if copy:
                        shutil.copyfile(src, target)
                    else:
                        os.replace(src, target)
                continue
            fd = open_beneath(taskdir.root, custom)
            if fd is None:
                continue
            with os.fdopen(fd, "rb") as src_file, target.open("wb") as out:
                shutil.copyfileobj(src_file, out)


class JobLogs:
    """Reads (and follows) one executor's output of a job."""

    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        *,
        jobs_dir: Path,
        logs_dir: Path,
        poll: float = 0.1,
        recheck: float = 5.0,
        backend_dirs: dict[str, Path] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.jobs_dir = jobs_dir
        self.backend_dirs = backend_dirs or {}
        """Task directory roots of backends that keep them elsewhere (a shared filesystem)."""
        self.logs_dir = logs_dir
        self.poll = poll
        self.recheck = recheck

    def kept(self, job_id: str) -> Path:
        return self.logs_dir / job_id

    async def check(self, job_id: str, index: int) -> Job:
        """The job (JobNotFound if unknown); InvalidRequest if it has no executor ``index``."""
        rec = await self.store.get(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        job = rec.to_job()
        if not 0 <= index < len(job.executors):
            raise InvalidRequest(
                f"job {job_id} has {len(job.executors)} executor(s); no executor {index}",
                errors=[{"where": "query.executor", "what": f"0 to {len(job.executors) - 1}"}],
            )
        return job

    def _open(self, job: Job, index: int, stream: Stream, final: bool) -> int | None:
        if final:
            return _open_plain(self.kept(job.id) / f"{index}.{stream}")
        root = self.backend_dirs.get(job.backend, self.jobs_dir)
        return open_live(TaskDir(root / job.id), job.executors[index], index, stream)

    async def read(
        self, job: Job, index: int, stream: Stream, *, follow: bool
    ) -> AsyncIterator[bytes]:
        """The output so far; with ``follow``, then what is written until the job is final.

        A descriptor opened on the running job's file stays valid when the dispatcher
        moves or copies it at the end, so following never loses the tail.
        """
        loop = asyncio.get_running_loop()
        async with self.bus.subscribe(lambda e: e.job_id == job.id) as sub:
            rec = await self.store.get(job.id)
            final = rec is None or rec.state in FINAL
            fd: int | None = None
            checked = loop.time()
            try:
                while True:
                    if fd is None:
                        fd = self._open(job, index, stream, final)
                    # Local files: a read of at most CHUNK bytes does not stall the loop.
                    data = os.read(fd, CHUNK) if fd is not None else b""
                    if data:
                        yield data
                        continue
                    if final or not follow:
                        return
                    try:
                        event = await self.bus.next(sub, self.poll)
                    except Overflow:  # only this job's events: hardly ever; ask the store
                        while not sub.queue.empty():
                            sub.queue.get_nowait()
                        sub.overflowed = False
                        event = None
                        checked = float("-inf")
                    if event is not None and event.to_state in FINAL:
                        final = True
                    elif loop.time() - checked >= self.recheck:
                        checked = loop.time()
                        rec = await self.store.get(job.id)
                        final = rec is None or rec.state in FINAL
            finally:
                if fd is not None:
                    os.close(fd)
