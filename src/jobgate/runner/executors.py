"""Run a task's executors one after another and collect their logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from jobgate.domain.models import ExecutorLog, Job, now, rfc3339
from jobgate.domain.states import State
from jobgate.runner.taskdir import PathEscape, TaskDir
from jobgate.runtimes.base import ExecSpec, Runtime, UnsupportedTask
from jobgate.runtimes.cgroups import CgroupLayout, ResourceGroup

log = logging.getLogger(__name__)


@dataclass
class TaskResult:
    """How a task's executors ended. ``state`` is RUNNING until they all have."""

    state: State = State.RUNNING
    executor_logs: list[ExecutorLog] = field(default_factory=list)
    system_logs: list[str] = field(default_factory=list)


def tail(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of a file, decoded leniently ('' if missing)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def exit_status(returncode: int) -> int:
    """Shell convention: a process killed by signal N reports 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


async def wait_process(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` without blocking the loop or holding a thread (pidfd readiness)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # kernels before 5.3
        return await asyncio.to_thread(proc.wait)
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def _readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, _readable)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


class TaskRun:
    """Runs one task; :meth:`cancel` kills the running executor's whole process tree.

    ``result`` is updated as executors finish, so a poller can read progress at any time.
    """

    def __init__(
        self,
        job: Job,
        taskdir: TaskDir,
        runtime: Runtime,
        cgroups: CgroupLayout,
        *,
        log_tail_bytes: int,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.job = job
        self.taskdir = taskdir
        self.runtime = runtime
        self.cgroups = cgroups
        self.log_tail_bytes = log_tail_bytes
        self.on_change = on_change
        self.result = TaskResult()
        self._proc: subprocess.Popen[bytes] | None = None
        self._group: ResourceGroup | None = None
        self._canceled = False

    async def run(self) -> TaskResult:
        try:
            await self._run_all()
        except asyncio.CancelledError:
            self._kill()
            self.result.state = State.CANCELED
            raise
        except (UnsupportedTask, PathEscape, OSError) as exc:
            self.result.state = State.SYSTEM_ERROR
            self.result.system_logs.append(f"cannot run executor: {exc}")
        finally:
            self.on_change()
        return self.result

    async def _run_all(self) -> None:
        for index, executor in enumerate(self.job.executors):
            if self._canceled:
                self.result.state = State.CANCELED
                return
            exlog = await self._run_one(index)
            self.result.executor_logs.append(exlog)
            self.on_change()
            if self._canceled:
                self.result.state = State.CANCELED
                return
            if exlog.exit_code != 0 and not executor.ignore_error:
                self.result.state = State.EXECUTOR_ERROR
                return
        self.result.state = State.COMPLETE

    async def _run_one(self, index: int) -> ExecutorLog:
        ex = self.job.executors[index]
        td = self.taskdir
        spec = ExecSpec(
            argv=ex.command,
            image=ex.image,
            root=td.root,
            mounts=[],
            env=dict(ex.env or {}),
            workdir=ex.workdir,
            cpu_cores=self.job.cpu_cores,
            ram_bytes=self.job.ram_bytes,
        )
        cmd = self.runtime.command(spec)
        stdout_path = td.host(ex.stdout) if ex.stdout else td.logs / f"{index}.stdout"
        stderr_path = td.host(ex.stderr) if ex.stderr else td.logs / f"{index}.stderr"
        stdin_path = td.host(ex.stdin) if ex.stdin else None
        group = self.cgroups.group(
            f"{self.job.id}-{index}", ram_bytes=spec.ram_bytes, cpu_cores=spec.cpu_cores
        )
        self._group = group
        argv = group.wrap(cmd.argv)
        start = now()
        try:
            with contextlib.ExitStack() as files:
                stdin = files.enter_context(stdin_path.open("rb")) if stdin_path else None
                stdout = files.enter_context(stdout_path.open("wb"))
                stderr = (
                    stdout
                    if stderr_path == stdout_path
                    else files.enter_context(stderr_path.open("wb"))
                )
                # Spawning (fork/exec) happens off the event loop so the API never stalls.
                self._proc = await asyncio.to_thread(
                    subprocess.Popen,
                    argv,
                    stdin=stdin if stdin is not None else subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=cmd.cwd,
                    env=cmd.env,
                    start_new_session=True,
                )
            if self._canceled:
                self._kill()
            self.on_change()
            returncode = await wait_process(self._proc)
        finally:
            self._proc = None
            oom = group.oom_killed()
            group.kill_all()  # daemons the executor left behind die with it
            group.remove()
            self._group = None
        end = now()
        exit_code = exit_status(returncode)
        if oom:
            gb = (spec.ram_bytes or 0) / 1024**3
            self.result.system_logs.append(
                f"executor {index} exceeded its memory limit (ram_gb={gb:g}) "
                "and was killed by the kernel's OOM killer"
            )
        return ExecutorLog(
            start_time=rfc3339(start),
            end_time=rfc3339(end),
            stdout=tail(stdout_path, self.log_tail_bytes),
            stderr=tail(stderr_path, self.log_tail_bytes),
            exit_code=exit_code,
        )

    def cancel(self) -> None:
        """Stop the task: no further executor starts, the running one is killed."""
        self._canceled = True
        self._kill()

    def _kill(self) -> None:
        if self._group is not None and self._group.active:
            self._group.kill_all()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        # Without cgroups: the session's process group, then any descendant that left it.
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
