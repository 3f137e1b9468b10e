"""Run a task's executors one after another and collect their logs.

Per executor the event loop makes two thread hops: one that does every blocking step
before the process exists (cgroup, stdio files, spawn) and one after it has exited (reap,
OOM check, cgroup removal, log tails). In between it waits on a pidfd, holding no thread.

Every executor records its own outcome in the task directory (``TaskDir.mark``; the
wrapper ``ResourceGroup.wrap`` puts in front of it writes them), so that a run survives the
process that started it: a :class:`TaskRun` made with ``adopted=True`` continues a task a
dead process left, from where it stands. Per executor it reads those records: none (never
started: it runs it), ``started`` (it waits for the wrapper, a pidfd on a process that is
not its child), ``status`` (it ended: its log is taken from the files), or ``started``
without ``status`` and no wrapper left (it was killed while nobody watched: SYSTEM_ERROR).
An executor is never started twice: its wrapper runs nothing if ``started`` exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import psutil

from jobgate.domain.models import ExecutorLog, Job, now, rfc3339
from jobgate.domain.states import State
from jobgate.runner.logfiles import open_beneath
from jobgate.runner.taskdir import PathEscape, TaskDir, container_paths
from jobgate.runtimes.base import (
    ExecSpec,
    Finished,
    Mount,
    Runtime,
    RuntimeFailure,
    UnsupportedTask,
)
from jobgate.runtimes.cgroups import LOST_START, CgroupLayout, ResourceGroup

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long the post-exit step waits for killed leftovers to leave their cgroup.
CGROUP_REMOVE_PATIENCE = 2.0


@dataclass
class TaskResult:
    """How a task's executors ended. ``state`` is RUNNING until they all have."""

    state: State = State.RUNNING
    executor_logs: list[ExecutorLog] = field(default_factory=list)
    system_logs: list[str] = field(default_factory=list)


def tail_fd(fd: int, limit: int) -> str:
    """The last ``limit`` bytes of the regular file open at ``fd``, decoded leniently."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or limit <= 0:
            return ""
        start = max(0, st.st_size - limit)
        data = os.pread(fd, st.st_size - start, start)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def exit_status(returncode: int) -> int:
    """Shell convention: a process killed by signal N reports 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class _Spawned:
    """One executor's running process and what the post-exit step needs of it."""

    spec: ExecSpec
    proc: subprocess.Popen[bytes]
    pidfd: int | None
    group: ResourceGroup
    out_fd: int
    err_fd: int
    """Our own descriptors of the stdout/stderr files: the tails are read through them, so
    an executor that swaps its log file for a symlink cannot make us read a host file."""
    start: datetime

    def close_fds(self) -> None:
        for fd in {self.out_fd, self.err_fd, self.pidfd}:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


class _CanceledBeforeStart(Exception):
    """The task was canceled while its executor was being prepared."""


class _Lost(Exception):
    """An adopted executor had started but ended without recording its exit status."""


@dataclass
class _Marks:
    """What an executor's records say (see :meth:`TaskDir.mark`)."""

    pid: int
    dirs: list[str]
    start: datetime
    status: int | None
    end: datetime | None


def read_marks(td: TaskDir, index: int) -> _Marks | None:
    """Executor ``index``'s records, or None when it never started (blocking)."""
    try:
        fd = os.open(td.mark(index, "started"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 65536).decode(errors="replace")
        started = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    lines = text.splitlines()
    if not lines or not lines[0].isdigit():
        # Its wrapper died between creating the file and writing it: it ran nothing
        # then, but it was started once and so is never run again.
        return _Marks(0, [], datetime.fromtimestamp(started, UTC), None, None)
    status, end = None, None
    try:
        fd = os.open(td.mark(index, "status"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    else:
        try:
            raw = os.read(fd, 64).strip()
            if raw.isdigit():
                status = int(raw)
                end = datetime.fromtimestamp(os.fstat(fd).st_mtime, UTC)
        finally:
            os.close(fd)
    return _Marks(int(lines[0]), lines[1:], datetime.fromtimestamp(started, UTC), status, end)


def open_wrapper(pid: int, started: str) -> int | None:
    """A pidfd of the live wrapper ``pid`` whose ``started`` record that is, or None when
    it is gone (a reused pid is told apart by its command line, which names the record)."""
    if pid <= 0:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        # After the pidfd: the pid cannot be reused while we check what it names.
        proc = psutil.Process(pid)
        named = any(started in arg for arg in proc.cmdline())
        if named and proc.status() != psutil.STATUS_ZOMBIE:
            return pidfd
    except psutil.Error:
        pass
    os.close(pidfd)
    return None


def kill_wrapper(pidfd: int, pid: int) -> None:
    """SIGKILL a wrapper that is not our child and what it started outside any cgroup:
    its session's processes (it leads one) and its descendants."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return  # ended: its pid may be someone else's by now
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


def open_log_file(td: TaskDir, index: int, named: str | None, stream: str) -> int:
    """Our own descriptor of an executor's stdout/stderr file, reopened by path (-1 when
    there is none): never through a symlink the task may have put there."""
    if named:
        fd = open_beneath(td.root, named)
        return -1 if fd is None else fd
    try:
        # Non-blocking: a FIFO put in its place must not hang the open.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        return os.open(td.log_file(index, stream), flags)
    except OSError:
        return -1


@dataclass
class _Outcome:
    returncode: int
    oom: bool
    pids_hit: bool
    stdout: str
    stderr: str


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
        run_as: tuple[int, int] | None = None,
        max_pids: int | None = None,
        base_env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        adopted: bool = False,
        before_start: Callable[[], None] | None = None,
        stale_groups: Sequence[str] = (),
    ) -> None:
        """``run_as``: the unprivileged (uid, gid) the executors run as, to which the task's
        directory is handed before the first starts and taken back from after the last;
        ``max_pids``: the processes one executor may hold at once (its cgroup's limit);
        ``base_env``: variables every executor gets under its own ``env`` (a batch job's
        scheduler variables); ``mounts``: host paths shown beside the site's host mounts.

        ``adopted``: continue a run another (dead) process started in ``taskdir``: see the
        module docstring; ``run_as`` is then the uid it was handed to. ``before_start`` is
        called (in a worker thread) before the first executor this object starts;
        ``stale_groups``: cgroup directories of the job's executors a dead process made,
        removed once the run has ended."""
        self.base_env = dict(base_env or {})
        self.mounts = list(mounts)
        self.job = job
        self.taskdir = taskdir
        self.runtime = runtime
        self.cgroups = cgroups
        self.log_tail_bytes = log_tail_bytes
        self.on_change = on_change
        self.result = TaskResult()
        # Set by the spawning thread, read by cancel() on the loop: the spawner publishes
        # the group before the spawn and the process after it, then checks _canceled, so
        # a cancel at any moment is seen by one side or the other.
        self._proc: subprocess.Popen[bytes] | None = None
        self._group: ResourceGroup | None = None
        # An adopted executor's wrapper (not our child): its pidfd and pid.
        self._foreign: tuple[int, int] | None = None
        self._canceled = False
        self._paths = container_paths(job, runtime.host_mounts)
        self.run_as = run_as
        self.max_pids = max_pids or None
        self.adopted = adopted
        self._before_start = before_start
        self._stale_groups = list(stale_groups)
        self._handed = adopted and run_as is not None
        self._limit_hit = False

    async def run(self) -> TaskResult:
        try:
            await self._run_all()
        except asyncio.CancelledError:
            self.cancel()
            self.result.state = State.CANCELED
            raise
        except (UnsupportedTask, RuntimeFailure, PathEscape, OSError) as exc:
            self.result.state = State.SYSTEM_ERROR
            self.result.system_logs.append(f"cannot run executor: {exc}")
        finally:
            if self._handed:  # every process of the task is gone by now
                self.taskdir.take_back()
            if self._stale_groups:
                await asyncio.get_running_loop().run_in_executor(None, self._remove_stale)
            self.on_change()
        return self.result

    def _remove_stale(self) -> None:
        group = ResourceGroup(self.cgroups.version, self._stale_groups, None)
        if group.kill_all():
            group.remove(patience=CGROUP_REMOVE_PATIENCE)
        else:
            group.remove()
        self.cgroups.remove_dead_subtrees()

    async def _run_all(self) -> None:
        for index, executor in enumerate(self.job.executors):
            if self._canceled:
                self.result.state = State.CANCELED
                return
            try:
                exlog = await self._adopt_one(index) if self.adopted else None
                if exlog is None:
                    exlog = await self._run_one(index)
            except _CanceledBeforeStart:
                self.result.state = State.CANCELED
                return
            except _Lost as exc:
                self.result.state = State.SYSTEM_ERROR
                self.result.system_logs.append(str(exc))
                return
            self.result.executor_logs.append(exlog)
            self.on_change()
            if self._canceled:
                self.result.state = State.CANCELED
                return
            failed = exlog.exit_code != 0 or self._limit_hit
            if failed and not executor.ignore_error:
                self.result.state = State.EXECUTOR_ERROR
                return
        self.result.state = State.COMPLETE

    async def _run_one(self, index: int) -> ExecutorLog:
        # A cancellation of this coroutine (service shutdown) kills the process at once but
        # is re-raised only once it is reaped and its cgroup gone: nothing is left behind.
        loop = asyncio.get_running_loop()
        spawned, interrupted = await _settle(
            loop.run_in_executor(None, self._spawn, index), self.cancel
        )
        if spawned.pidfd is not None:
            _, cut = await _settle(_readable(spawned.pidfd), self.cancel)
        else:  # kernels before 5.3: a thread waits
            _, cut = await _settle(loop.run_in_executor(None, spawned.proc.wait), self.cancel)
        end = now()
        self._proc = None  # reaped next: its pid may be reused, never signal it again
        outcome, _ = await _settle(
            loop.run_in_executor(None, self._finish, spawned, index), self.cancel
        )
        self._group = None
        if interrupted or cut:
            raise asyncio.CancelledError
        if outcome is None:  # an adopter's start lost to the dead process's own
            lost = await self._adopt_one(index)
            assert lost is not None
            return lost
        return self._log_of(index, spawned.start, end, outcome)

    def _log_of(self, index: int, start: datetime, end: datetime, outcome: _Outcome) -> ExecutorLog:
        gb = (self.job.ram_bytes or 0) / 1024**3
        self._limit_hit = outcome.pids_hit
        if outcome.pids_hit:
            self.result.system_logs.append(
                f"executor {index} reached its limit of {self.max_pids} processes "
                "(JOBGATE_TASK_MAX_PIDS): a fork beyond it failed"
            )
        if outcome.oom:
            self.result.system_logs.append(
                f"executor {index} exceeded its memory limit (ram_gb={gb:g}) "
                "and was killed by the kernel's OOM killer"
            )
        elif (
            self.runtime.limits_itself
            and self.job.ram_bytes
            and exit_status(outcome.returncode) == 128 + signal.SIGKILL
            and not self._canceled
        ):
            # Engines on cgroup v1 hosts may not see their own OOM kills: a SIGKILL
            # nobody here sent, under a memory limit, is most likely one.
            self.result.system_logs.append(
                f"executor {index} was killed (SIGKILL) under a memory limit of "
                f"ram_gb={gb:g}: most likely it exceeded it (the kernel's OOM killer)"
            )
        return ExecutorLog(
            start_time=rfc3339(start),
            end_time=rfc3339(end),
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            exit_code=exit_status(outcome.returncode),
        )

    async def _adopt_one(self, index: int) -> ExecutorLog | None:
        """Executor ``index`` of an adopted run as its records have it: None if it never
        started (the caller starts it), else its log once it has ended (waiting for it if
        it still runs); raises :class:`_Lost` if it ended without a status."""
        loop = asyncio.get_running_loop()
        td = self.taskdir
        marks = await loop.run_in_executor(None, read_marks, td, index)
        if marks is None:
            return None
        for _ in range(20):
            if marks.pid or (now() - marks.start).total_seconds() > 1:
                break
            # Created an instant ago and not written yet: its wrapper is writing it.
            await asyncio.sleep(0.1)
            marks = await loop.run_in_executor(None, read_marks, td, index) or marks
        started = td.mark(index, "started")
        group = self.cgroups.adopt(marks.dirs, ram_bytes=self.job.ram_bytes)
        self._group = group  # cancel() kills whatever is in it
        cut = False
        if marks.status is None:
            pidfd = await loop.run_in_executor(None, open_wrapper, marks.pid, started)
            if pidfd is not None:
                self._foreign = (pidfd, marks.pid)
                if self._canceled:
                    self._kill()
                try:
                    _, cut = await _settle(_readable(pidfd), self.cancel)
                finally:
                    self._foreign = None
                    os.close(pidfd)
                marks = await loop.run_in_executor(None, read_marks, td, index) or marks
        returncode = marks.status
        if returncode is None and self._canceled:
            returncode = 128 + signal.SIGKILL  # as a cancel of an executor we started
        outcome, _ = await _settle(
            loop.run_in_executor(None, self._finish_adopted, index, group, returncode),
            self.cancel,
        )
        self._group = None
        if cut:
            raise asyncio.CancelledError
        if returncode is None:
            raise _Lost(
                f"executor {index} had started (wrapper pid {marks.pid}) but ended without "
                "recording its exit status while no gateway process watched it: it was "
                "killed from outside (or the machine restarted); it is not run again"
            )
        return self._log_of(index, marks.start, marks.end or now(), outcome)

    def _finish_adopted(self, index: int, group: ResourceGroup, returncode: int | None) -> _Outcome:
        """In a worker thread: :meth:`_finish` for an executor another process started."""
        try:
            finished = self.runtime.finish(self._spec(index), returncode)
        except RuntimeFailure as exc:
            log.error("executor %s of %s: %s", index, self.job.id, exc)
            finished = Finished()
        notes = _read_notes(self.taskdir.mark(index, "notes"))
        oom = group.oom_killed() or finished.oom or "oom" in notes
        pids_hit = group.pids_limit_hit() or "pids" in notes
        if group.kill_all():
            group.remove(patience=CGROUP_REMOVE_PATIENCE)
        else:
            group.remove()
        ex = self.job.executors[index]
        out_fd = open_log_file(self.taskdir, index, ex.stdout, "stdout")
        err_fd = open_log_file(self.taskdir, index, ex.stderr, "stderr")
        limit = self.log_tail_bytes
        try:
            return _Outcome(
                returncode if returncode is not None else -1,
                oom,
                pids_hit,
                stdout=tail_fd(out_fd, limit) if out_fd >= 0 else "",
                stderr=tail_fd(err_fd, limit) if err_fd >= 0 else "",
            )
        finally:
            for fd in {out_fd, err_fd} - {-1}:
                os.close(fd)

    def _spec(self, index: int) -> ExecSpec:
        ex = self.job.executors[index]
        return ExecSpec(
            argv=ex.command,
            image=ex.image,
            root=self.taskdir.root,
            mounts=[*self.runtime.shared_mounts(), *self.mounts],
            env={**self.base_env, **(ex.env or {})},
            workdir=ex.workdir,
            cpu_cores=self.job.cpu_cores,
            ram_bytes=self.job.ram_bytes,
            name=f"jobgate-{self.job.id}-{index}",
            paths=self._paths,
            run_as=self.run_as,
        )

    def _spawn(self, index: int) -> _Spawned:
        """In a worker thread: everything up to a running process (never on the loop)."""
        ex = self.job.executors[index]
        td = self.taskdir
        spec = self._spec(index)
        if self._before_start is not None:
            self._before_start()
            self._before_start = None
        if self.run_as is not None and not self._handed:
            # Before any executor runs: no process of the task can race the walk.
            td.hand_over(*self.run_as)
            self._handed = True
        self.runtime.prepare(spec)
        if self._canceled:  # during a long image pull, say: start nothing
            raise _CanceledBeforeStart
        cmd = self.runtime.command(spec)
        stdout_path = td.host(ex.stdout) if ex.stdout else td.log_file(index, "stdout")
        stderr_path = td.host(ex.stderr) if ex.stderr else td.log_file(index, "stderr")
        stdin_path = td.host(ex.stdin) if ex.stdin else None
        # A runtime that limits the executor itself leaves this group only its client,
        # which must not be OOM-killed in the executor's stead.
        own = not self.runtime.limits_itself
        group = self.cgroups.group(
            f"{self.job.id}-{index}",
            ram_bytes=spec.ram_bytes if own else None,
            cpu_cores=spec.cpu_cores if own else None,
            max_pids=self.max_pids,
        )
        self._group = group  # from here on, cancel() kills whatever joins it
        fds: list[int] = []
        try:
            # Read-write: after the exit the tails are read through these same descriptors.
            flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            out_fd = os.open(stdout_path, flags, 0o666)
            fds.append(out_fd)
            err_fd = out_fd
            if stderr_path != stdout_path:
                err_fd = os.open(stderr_path, flags, 0o666)
                fds.append(err_fd)
            if self.run_as is not None:
                # Files the executor named are its own, like every other in its root.
                for fd, named in ((out_fd, ex.stdout), (err_fd, ex.stderr)):
                    if named:
                        os.fchown(fd, *self.run_as)
            stdin: int = subprocess.DEVNULL
            if stdin_path is not None:
                stdin = os.open(stdin_path, os.O_RDONLY | os.O_CLOEXEC)
                fds.append(stdin)
            start = now()
            marks = (td.mark(index, "started"), td.mark(index, "status"))
            proc = subprocess.Popen(
                group.wrap(cmd.argv, own_uid=self.run_as is not None, marks=marks),
                stdin=stdin,
                stdout=out_fd,
                stderr=err_fd,
                cwd=cmd.cwd,
                env=cmd.env,
                start_new_session=True,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            group.remove()
            self._group = None
            with contextlib.suppress(RuntimeFailure):  # the spawn's error is the news
                self.runtime.finish(spec, None)
            raise
        if stdin_path is not None:
            os.close(fds[-1])
        self._proc = proc
        if self._canceled:  # a cancel that came while we spawned
            self._kill()
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except OSError:  # kernels before 5.3
            pidfd = None
        return _Spawned(spec, proc, pidfd, group, out_fd, err_fd, start)

    def _finish(self, spawned: _Spawned, index: int) -> _Outcome | None:
        """In a worker thread: reap, check for OOM, clear the cgroup, read the log tails.
        None: an adopted run's wrapper found its executor started by another (it ran
        nothing)."""
        try:
            returncode = spawned.proc.wait()
            if self.adopted and returncode == LOST_START:
                marks = read_marks(self.taskdir, index)
                if marks is not None and marks.pid != spawned.proc.pid:
                    spawned.group.remove()
                    return None
            # The runtime's leftovers (a container) go first: the group's kill below
            # may take the engine's client, never what it started elsewhere.
            try:
                finished = self.runtime.finish(spawned.spec, returncode)
            except RuntimeFailure as exc:  # the engine is gone: its sweep at start cleans up
                log.error("executor %s: %s", spawned.spec.name, exc)
                finished = Finished()
            group = spawned.group
            oom = group.oom_killed() or finished.oom
            pids_hit = group.pids_limit_hit()
            if oom or pids_hit:  # for an adopter, should we die before reporting it
                _write_notes(self.taskdir.mark(index, "notes"), oom=oom, pids=pids_hit)
            if group.kill_all():  # daemons the executor left behind die with it
                group.remove(patience=CGROUP_REMOVE_PATIENCE)
            else:
                group.remove()
            limit = self.log_tail_bytes
            return _Outcome(
                returncode,
                oom,
                pids_hit,
                stdout=tail_fd(spawned.out_fd, limit),
                stderr=tail_fd(spawned.err_fd, limit),
            )
        finally:
            spawned.close_fds()

    def cancel(self) -> None:
        """Stop the task: no further executor starts, the running one is killed."""
        self._canceled = True
        self._kill()

    def _kill(self) -> None:
        group = self._group
        if group is not None and group.active:
            group.kill_all()
        foreign = self._foreign
        if foreign is not None:
            kill_wrapper(*foreign)
            return
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


def _write_notes(path: str, *, oom: bool, pids: bool) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, ("oom\n" if oom else "").encode() + (b"pids\n" if pids else b""))
        finally:
            os.close(fd)


def _read_notes(path: str) -> set[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return set()
    try:
        return set(os.read(fd, 4096).decode(errors="replace").split())
    finally:
        os.close(fd)


def _readable(fd: int) -> asyncio.Future[None]:
    """A future resolved once ``fd`` (a pidfd: the process exited) is readable."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def _on_readable() -> None:
        loop.remove_reader(fd)
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, _on_readable)
    return ready


async def _settle(work: Awaitable[T], on_cancel: Callable[[], None]) -> tuple[T, bool]:
    """Await ``work`` to its end even if the caller is cancelled meanwhile.

    A cancellation calls ``on_cancel`` (which must make ``work`` end soon) and is reported
    in the second value, for the caller to re-raise once it has cleaned up.
    """
    fut = asyncio.ensure_future(work)
    interrupted = False
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            interrupted = True
            on_cancel()
    if interrupted and (fut.cancelled() or fut.exception() is not None):
        raise asyncio.CancelledError
    return fut.result(), interrupted
