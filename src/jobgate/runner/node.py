"""The node side of a batch backend: ``python -m jobgate.runner.node TASKDIR``.

Runs one task's executors in TASKDIR (on a filesystem the gateway shares) with the same
runtime and cgroup limits as the local backend, then writes ``TASKDIR/result.json``. The
gateway reads that file, so a task's exit codes and output survive the batch job leaving
the scheduler's memory (no accounting database needed).

``TASKDIR/node.json`` (written by the gateway) holds the task and how to run it::

    {"task": {...plain task: nodetask.task_fields...},
     "runtime": "bwrap"|"process"|"podman"|…,
     "runtime_options": {...container settings, image map, host mounts...},
     "log_tail_bytes": 65536,
     "job": {...Job...}}            # container runtimes only

This module starts once per batch job, so it imports the standard library alone (and
``json``'s few modules): bwrap and process tasks run in ``nodetask.py``, without
pydantic, asyncio or psutil, and the first executor starts within a few tens of
milliseconds of the interpreter. Container runtimes (and a ``node.json`` without
``task``) go to the full :class:`~jobgate.runner.executors.TaskRun` (``nodefull.py``).

``--list FILE`` reads the task directory from the line of FILE that is this array element's
(``$SLURM_ARRAY_TASK_ID``, 0-based, or ``$SGE_TASK_ID``, 1-based) instead: one script
serves every element of a job array. The files of the task directory: ``nodefiles.py``.

SIGTERM/SIGINT (a cancel, time limit or preemption) kill the running executor; the result
then records the signal, and the gateway asks the scheduler why it came.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from jobgate.runner.nodefiles import NODE_FILE, RESULT_FILE, STARTED_FILE, read_json, write_json
from jobgate.runner.schedenv import scheduler_env, scheduler_files

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import FrameType
    from typing import Any

    from jobgate.runner.nodetask import NodeTask

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
USAGE = "usage: python -m jobgate.runner.node (TASKDIR | --list FILE)"


def native_id_from_env(env: Mapping[str, str]) -> str | None:
    """The scheduler's id for this run: Slurm's ``A_i`` for array elements, else its job
    id; Grid Engine's ``J.t`` for array tasks, else its job id."""
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    sge_task = env.get("SGE_TASK_ID")
    if env.get("JOB_ID") and sge_task is not None:  # Grid Engine sets it, "undefined" or N
        return env["JOB_ID"] if sge_task in ("", "undefined") else f"{env['JOB_ID']}.{sge_task}"
    return None


def array_index_from_env(env: Mapping[str, str]) -> int:
    """This array element's 0-based index (-1 outside an array): Slurm arrays are
    submitted as 0..N-1, Grid Engine's task ids are 1..N."""
    try:
        if env.get("SLURM_ARRAY_TASK_ID"):
            return int(env["SLURM_ARRAY_TASK_ID"])
        if env.get("SGE_TASK_ID") not in (None, "", "undefined"):
            return int(env["SGE_TASK_ID"]) - 1
    except ValueError:
        pass
    return -1


def queue_from_env(env: Mapping[str, str]) -> str | None:
    """The partition (Slurm) or queue (Grid Engine) the run landed in."""
    return env.get("SLURM_JOB_PARTITION") or env.get("QUEUE")


def scratch_dir() -> str:
    """A private directory for this run, in memory where the node has /dev/shm: the
    sandbox's /etc copy is ~700 symlinks, ~1 ms each on some disks, ~5 µs in tmpfs."""
    shm = "/dev/shm"
    parent = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
    parent = parent or os.environ.get("TMPDIR") or "/tmp"
    while True:
        path = os.path.join(parent, f"jobgate-node-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def remove_tree(path: str) -> None:
    """Delete ``path`` and all in it (never following symlinks), ignoring errors."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                remove_tree(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            pass
    with contextlib.suppress(OSError):
        os.rmdir(path)


def exit_code(state: str, executor_logs: list[dict[str, Any]]) -> int:
    """0 for success, else the failed executor's code (1 if there is none): the scheduler's
    own view (FAILED, ExitCode) then agrees with the task's."""
    if state == "COMPLETE":
        return 0
    codes = [int(log["exit_code"]) for log in executor_logs if log.get("exit_code") != 0]
    return min(max(codes[-1], 1), 255) if codes else 1


def _check_task(task: object) -> dict[str, Any]:
    """``task`` if it has the shape :func:`nodetask.task_fields` writes, else ValueError."""
    if not isinstance(task, dict) or not isinstance(task.get("id"), str):
        raise ValueError("the task has no id")
    executors = task.get("executors")
    if not isinstance(executors, list) or not executors:
        raise ValueError("the task has no executors")
    for ex in executors:
        command = ex.get("command") if isinstance(ex, dict) else None
        if not isinstance(command, list) or not command:
            raise ValueError(f"an executor without a command: {ex!r}")
        if not all(isinstance(a, str) for a in command):
            raise ValueError(f"an executor's command is not a list of strings: {command!r}")
        if not isinstance(ex.get("env") or {}, dict):
            raise ValueError(f"an executor's env is not an object: {ex.get('env')!r}")
    return task


def run_task(base: str) -> int:
    """Run the task in ``base``; the batch job's exit code (see :func:`exit_code`)."""
    received: list[str] = []
    current: list[NodeTask] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        for task in current:
            task.cancel()

    # Before anything else: a cancel that comes during start-up still ends in a result.
    for sig in SIGNALS:
        signal.signal(sig, on_signal)
    # Descriptors 0-2 open (on /dev/null if the batch daemon closed one), so that none of
    # the runner's own files takes their number and the executor's stdio is what we give.
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    base = os.path.abspath(base)
    started = {
        "native_id": native_id_from_env(os.environ),
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "partition": queue_from_env(os.environ),
    }
    write_json(os.path.join(base, STARTED_FILE), {**started, "time": _now()}, sync=False)
    scratch = scratch_dir()
    try:
        state, logs, system = _run(base, scratch, received, current)
    except Exception as exc:  # a bug: still a result, never a job that seems to hang
        state, logs, system = "SYSTEM_ERROR", [], [f"the node runner failed: {exc!r}"]
    finally:
        remove_tree(scratch)
    result = {
        **started,
        "state": state,
        "executor_logs": logs,
        "system_logs": system,
        "signal": received[0] if received else None,
        "end_time": _now(),
    }
    write_json(os.path.join(base, RESULT_FILE), result)
    return exit_code(state, logs)


def _run(
    base: str, scratch: str, received: list[str], current: list[NodeTask]
) -> tuple[str, list[dict[str, Any]], list[str]]:
    node = read_json(os.path.join(base, NODE_FILE))
    runtime = str((node or {}).get("runtime", "auto"))
    if runtime == "auto":  # gateways decide, but an older node.json may say so
        from jobgate.runtimes.argv import which

        runtime = "bwrap" if which("bwrap") else "process"
    from jobgate.runner.nodetask import RUNTIMES

    if node is None or runtime not in RUNTIMES or "task" not in node:
        if node is None:
            why = f"{os.path.join(base, NODE_FILE)} is missing or not a JSON object"
            return "SYSTEM_ERROR", [], [f"the node runner could not start the task: {why}"]
        from jobgate.runner.nodefull import run_full

        return run_full(base, {**node, "runtime": runtime}, scratch, received)
    from jobgate.runner.nodecgroups import NodeCgroups
    from jobgate.runner.nodetask import NodeTask, Sandbox

    try:
        task = _check_task(node["task"])
        sandbox = Sandbox(runtime, scratch, node.get("runtime_options") or {})
        log_tail_bytes = int(node.get("log_tail_bytes", 65536))
        cgroups = NodeCgroups.detect()
    except Exception as exc:  # the gateway reports this as the task's system error
        return "SYSTEM_ERROR", [], [f"the node runner could not start the task: {exc!r}"]
    run = NodeTask(
        task,
        base,
        sandbox,
        cgroups,
        log_tail_bytes=log_tail_bytes,
        base_env=scheduler_env(os.environ),
        files=scheduler_files(os.environ),
    )
    current.append(run)
    if received:
        run.cancel()
    try:
        run.run()
    finally:
        cgroups.close()
    if received and run.state == "CANCELED":
        run.system_logs.append(f"the node runner received {received[0]}")
    return run.state, run.executor_logs, run.system_logs


def _now() -> str:
    from jobgate.runner.nodetask import rfc3339

    return rfc3339()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0].startswith("--list="):
        args = ["--list", args[0].removeprefix("--list=")]
    if len(args) == 2 and args[0] == "--list":
        index = array_index_from_env(os.environ)
        try:
            with open(args[1], encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            print(f"cannot read the task list {args[1]}: {exc}", file=sys.stderr)
            return 2
        if not 0 <= index < len(lines):
            print(f"no task dir for array index {index} in {args[1]}", file=sys.stderr)
            return 2
        return run_task(lines[index])
    if len(args) == 1 and not args[0].startswith("-"):
        return run_task(args[0])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
