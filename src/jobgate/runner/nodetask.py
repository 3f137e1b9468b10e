"""The batch node runner's own task runner: a task's executors in order, in the bwrap or
process runtime, with the standard library alone.

It does what :class:`~jobgate.runner.executors.TaskRun` does for the local backend (per
executor: a cgroup with the task's limits, stdio files, spawn, wait, OOM check, whole-tree
kill, log tails; stop at the first failure unless ``ignore_error``; a cancel kills the
running executor and starts no other) and reports in the same words, but without
pydantic, asyncio or psutil: the node runner starts once per batch job, and those imports
cost several times the rest of its start-up. One process, one task: the main thread waits
for each executor; a signal handler (:meth:`NodeTask.cancel`) kills it.

The task comes as plain JSON (:func:`task_fields`, written by the gateway)::

    {"id": "...", "cpu_cores": 1, "ram_bytes": null,
     "executors": [{"command": [...], "image": "...", "workdir": null, "stdin": null,
                    "stdout": null, "stderr": null, "env": {}, "ignore_error": false}]}
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import time

from jobgate.runner.hostpath import PathEscape, host_path
from jobgate.runner.nodecgroups import NodeCgroups, NodeGroup
from jobgate.runtimes import argv as sandbox
from jobgate.runtimes.errors import DEFAULT_PATH, RuntimeFailure, UnsupportedTask

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from jobgate.domain.models import Job

# The runtimes this module runs itself; the node runner hands others (container engines)
# to the full TaskRun.
RUNTIMES = ("bwrap", "process")
# How long the post-exit step waits for killed leftovers to leave their cgroup.
CGROUP_REMOVE_PATIENCE = 2.0

COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED, RUNNING = (
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "RUNNING",
)


def task_fields(job: Job) -> dict[str, Any]:
    """What the node runner needs of ``job``, as plain JSON (the gateway writes it)."""
    return {
        "id": job.id,
        "cpu_cores": job.cpu_cores,
        "ram_bytes": job.ram_bytes,
        "executors": [
            {
                "command": list(ex.command),
                "image": ex.image,
                "workdir": ex.workdir,
                "stdin": ex.stdin,
                "stdout": ex.stdout,
                "stderr": ex.stderr,
                "env": dict(ex.env or {}),
                "ignore_error": bool(ex.ignore_error),
            }
            for ex in job.executors
        ],
    }


def rfc3339(ns: int | None = None) -> str:
    """``ns`` nanoseconds since the epoch (default: now) as the gateway writes timestamps
    (UTC, microseconds, ``Z``), without importing datetime."""
    whole, rest = divmod(time.time_ns() if ns is None else ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{rest // 1000:06d}Z"


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


def spawn(
    argv: Sequence[str], *, cwd: str, env: Mapping[str, str], stdin: int, stdout: int, stderr: int
) -> int:
    """Start ``argv`` as ``subprocess.Popen(argv, cwd=, env=, stdin=, stdout=, stderr=,
    start_new_session=True)`` would (``argv[0]`` looked up on ``env``'s PATH, only the
    three stdio descriptors inherited, SIGPIPE and SIGXFSZ back to their defaults), with
    ``posix_spawn``: no subprocess module (its imports cost a fifth of the runner's
    start-up) and no fork of the runner. The pid; OSError if it cannot start. The node
    runner has one thread: changing its directory around the spawn is safe."""
    path = _executable(argv[0], env)
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    # Descriptors the runner inherited (from the batch daemon) stay out of the executor,
    # as subprocess's close_fds keeps them: ours are all close-on-exec.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(cwd)
        return os.posix_spawn(
            path,
            list(argv),
            dict(env),
            file_actions=actions,
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    finally:
        os.fchdir(here)
        os.close(here)


def _executable(name: str, env: Mapping[str, str]) -> str:
    """``name`` as ``execvpe`` with ``env`` finds it; FileNotFoundError (as subprocess
    raises it) when nothing executable goes by that name."""
    if "/" in name:
        return name
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def wait(pid: int) -> int:
    """Reap ``pid``: its exit code, or minus the signal that killed it (as Popen's
    ``returncode``). Signal handlers run while it waits (PEP 475)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def exit_status(returncode: int) -> int:
    """Shell convention: a process killed by signal N reports 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Sandbox:
    """One task's runtime on this node: builds each executor's host command."""

    def __init__(self, name: str, scratch: str, options: Mapping[str, Any]) -> None:
        """``name``: bwrap or process; bwrap builds its sandbox ``/etc`` under ``scratch``.
        ``options``: the gateway's runtime options (host mounts, image map, network)."""
        if name not in RUNTIMES:
            raise ValueError(f"runtime {name!r} is not run by the node's own task runner")
        self.name = name
        # The gateway checked these when it read its settings; node.json is its own file.
        self.host_mounts = [
            (str(m["path"]), str(m["path"]), not m.get("writable", False))
            for m in options.get("host_mounts") or ()
        ]
        self.image_map: dict[str, str] = dict(options.get("image_map") or {})
        self.bwrap: sandbox.BwrapArgv | None = None
        if name == "bwrap":
            executable = sandbox.which("bwrap")
            if executable is None:
                raise FileNotFoundError("bubblewrap (bwrap) is not installed")
            etc = os.path.join(scratch, "etc")
            sandbox.build_etc(etc)
            # The sandbox's user maps to the node runner's own uid whatever it is called
            # inside; called by that uid's number, scheduler tools work: srun's step
            # requests carry getuid(), which must be the job owner's (nobody is refused).
            root = os.geteuid() == 0
            self.bwrap = sandbox.BwrapArgv(
                executable,
                network=bool(options.get("executor_network", False)),
                run_as=(os.geteuid(), os.getegid()) if root else None,
                etc_dir=etc,
                setpriv=sandbox.which("setpriv") if root else None,
            )

    def command(
        self,
        root: str,
        executor: Mapping[str, Any],
        env: Mapping[str, str],
        mounts: Sequence[tuple[str, str, bool]],
    ) -> tuple[list[str], str, dict[str, str]]:
        """(argv, cwd, env) of ``executor``'s host command."""
        workdir = executor.get("workdir")
        if self.bwrap is None:
            return sandbox.process_command(root, executor["command"], env=env, workdir=workdir)
        image = str(executor.get("image") or "")
        rootfs = sandbox.image_rootfs(self.image_map, image)
        sandbox.check_rootfs(image, rootfs)
        argv = self.bwrap.command(
            root,
            executor["command"],
            rootfs=rootfs,
            mounts=[*self.host_mounts, *mounts],
            env=env,
            workdir=workdir,
        )
        return argv, root, {"PATH": DEFAULT_PATH}


class NodeTask:
    """Runs one task's executors; :meth:`cancel` (from a signal handler) kills the running
    one and starts no other. ``state``, ``executor_logs`` and ``system_logs`` are what the
    result file reports."""

    def __init__(
        self,
        task: Mapping[str, Any],
        base: str,
        sandbox_: Sandbox,
        cgroups: NodeCgroups,
        *,
        log_tail_bytes: int,
        base_env: Mapping[str, str],
        files: Sequence[str] = (),
    ) -> None:
        """``base``: the task directory (``base/root`` the task's filesystem, ``base/<n>.stdout``
        the captured output); ``base_env``: variables every executor gets under its own
        ``env``; ``files``: host files shown read-only at their own path."""
        self.task = task
        self.base = base
        self.root = os.path.join(base, "root")
        self.sandbox = sandbox_
        self.cgroups = cgroups
        self.log_tail_bytes = log_tail_bytes
        self.base_env = dict(base_env)
        self.mounts = [(f, f, True) for f in files]
        self.state = RUNNING
        self.executor_logs: list[dict[str, Any]] = []
        self.system_logs: list[str] = []
        self.canceled = False
        self._pid: int | None = None
        """The running executor's pid; None once reaped (the pid may then be reused)."""
        self._group: NodeGroup | None = None

    def run(self) -> None:
        try:
            self._run_all()
        except (UnsupportedTask, RuntimeFailure, PathEscape, OSError) as exc:
            self.state = SYSTEM_ERROR
            self.system_logs.append(f"cannot run executor: {exc}")

    def _run_all(self) -> None:
        for index, executor in enumerate(self.task["executors"]):
            if self.canceled:
                self.state = CANCELED
                return
            exlog, exited = self._run_one(index, executor)
            self.executor_logs.append(exlog)
            if self.canceled:
                self.state = CANCELED
                return
            if exited != 0 and not executor.get("ignore_error"):
                self.state = EXECUTOR_ERROR
                return
        self.state = COMPLETE

    def _stdio(self, named: str | None, index: int, stream: str) -> str:
        return host_path(self._real_root, named) if named else f"{self.base}/{index}.{stream}"

    def _run_one(self, index: int, ex: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        self._real_root = os.path.realpath(self.root)
        env = {**self.base_env, **(ex.get("env") or {})}
        argv, cwd, cmd_env = self.sandbox.command(self.root, ex, env, self.mounts)
        stdout_path = self._stdio(ex.get("stdout"), index, "stdout")
        stderr_path = self._stdio(ex.get("stderr"), index, "stderr")
        stdin_path = host_path(self._real_root, ex["stdin"]) if ex.get("stdin") else None
        ram = self.task.get("ram_bytes")
        group = self.cgroups.group(
            f"{self.task['id']}-{index}", ram_bytes=ram, cpu_cores=self.task.get("cpu_cores")
        )
        self._group = group  # from here on, cancel() kills whatever joins it
        fds: list[int] = []
        try:
            # Read-write: after the exit the tails are read through these same descriptors,
            # so an executor that swaps its log file for a symlink cannot make us read a
            # host file.
            flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            out_fd = os.open(stdout_path, flags, 0o666)
            fds.append(out_fd)
            err_fd = out_fd
            if stderr_path != stdout_path:
                err_fd = os.open(stderr_path, flags, 0o666)
                fds.append(err_fd)
            stdin = os.open(stdin_path or os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            start = time.time_ns()
            try:
                pid = spawn(
                    group.wrap(argv),
                    cwd=cwd,
                    env=cmd_env,
                    stdin=stdin,
                    stdout=out_fd,
                    stderr=err_fd,
                )
            finally:
                os.close(stdin)
            self._pid = pid
            if self.canceled:  # a signal that came while we spawned
                self._kill()
            try:
                returncode = wait(pid)
            finally:
                self._pid = None
            end = time.time_ns()
            oom = group.oom_killed()
            if group.kill_all():  # daemons the executor left behind die with it
                group.remove(patience=CGROUP_REMOVE_PATIENCE)
            else:
                group.remove()
            self._group = None
            stdout = tail_fd(out_fd, self.log_tail_bytes)
            stderr = tail_fd(err_fd, self.log_tail_bytes)
        except BaseException:
            group.remove()
            self._group = None
            raise
        finally:
            for fd in fds:
                os.close(fd)
        if oom:
            gb = (ram or 0) / 1024**3
            self.system_logs.append(
                f"executor {index} exceeded its memory limit (ram_gb={gb:g}) "
                "and was killed by the kernel's OOM killer"
            )
        exited = exit_status(returncode)
        log = {
            "start_time": rfc3339(start),
            "end_time": rfc3339(end),
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": exited,
        }
        return log, exited

    def cancel(self) -> None:
        """Stop the task: no further executor starts, the running one is killed."""
        self.canceled = True
        self._kill()

    def _kill(self) -> None:
        group = self._group
        if group is not None and group.active:
            group.kill_all()
        pid = self._pid
        if pid is None:
            return
        # Without cgroups: the session's process group (bwrap's sandbox dies with it:
        # --die-with-parent, its own pid namespace), then any descendant that left it.
        for child in _descendants(pid):
            _kill(child, pgroup=False)
        _kill(pid, pgroup=True)


def _kill(pid: int, *, pgroup: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if pgroup else os.kill)(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc (children files, else stat)."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
