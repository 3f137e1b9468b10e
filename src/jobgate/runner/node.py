"""The node side of a batch backend: ``python -m jobgate.runner.node TASKDIR``.

Runs one task's executors in TASKDIR (on a filesystem the gateway shares) with the same
:class:`TaskRun`, runtime and cgroup limits as the local backend, then writes
``TASKDIR/result.json``. The gateway reads that file, so a task's exit codes and output
survive the batch job leaving the scheduler's memory (no accounting database needed).

``TASKDIR/node.json`` (written by the gateway) holds the task and how to run it::

    {"job": {...Job...}, "runtime": "bwrap"|"process"|"auto"|"podman"|…,
     "runtime_options": {...container settings...}, "log_tail_bytes": 65536}

``--list FILE`` reads the task directory from line ``$SLURM_ARRAY_TASK_ID`` (0-based) of
FILE instead: one script serves every element of a job array.

SIGTERM/SIGINT (a cancel, time limit or preemption) kill the running executor; the result
then records the signal, and the gateway asks the scheduler why it came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from jobgate.domain.models import Job, now, rfc3339
from jobgate.domain.states import State
from jobgate.runner.executors import TaskResult, TaskRun
from jobgate.runner.taskdir import TaskDir
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.cgroups import CgroupLayout

NODE_FILE = "node.json"
RESULT_FILE = "result.json"
STARTED_FILE = "started.json"


def native_id_from_env(env: dict[str, str] | os._Environ[str]) -> str | None:
    """The scheduler's id for this run (Slurm: ``A_i`` for array elements)."""
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return env.get("SLURM_JOB_ID")


def write_json(path: Path, data: dict[str, Any], *, sync: bool = True) -> None:
    """Atomically (write, rename): a reader sees the whole file or none. ``sync`` also
    fsyncs it first, for files that must outlive a crash of the machine."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def make_node_runtime(name: str, scratch: Path, options: dict[str, Any] | None = None) -> Runtime:
    """The runtime ``name``; bwrap builds its sandbox ``/etc`` under ``scratch``. Container
    runtimes are built as the gateway builds its own, from the gateway's ``options``."""
    # Imported here: the bwrap module is only needed when chosen.
    from jobgate.runtimes.bwrap import BwrapRuntime, bwrap_available
    from jobgate.runtimes.process import ProcessRuntime

    if name == "auto":
        name = "bwrap" if bwrap_available() else "process"
    if name == "bwrap":
        return BwrapRuntime(etc_dir=scratch / "etc")
    if name == "process":
        return ProcessRuntime()
    if name in ("podman", "docker", "apptainer", "singularity"):
        # Imported here: settings and engines cost start-up time bwrap jobs need not pay.
        from jobgate.config import Settings
        from jobgate.runtimes.choice import make_runtime

        settings = Settings(**{**(options or {}), "runtime": name, "data_dir": scratch})
        return make_runtime(settings)
    raise ValueError(f"runtime {name!r} is not known on batch nodes")


def scratch_dir() -> Path:
    """A private directory for this run, in memory where the node has /dev/shm: the
    sandbox's /etc copy is ~700 symlinks, ~1 ms each on some disks, ~5 µs in tmpfs."""
    shm = "/dev/shm"
    fast = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
    return Path(tempfile.mkdtemp(prefix="jobgate-node-", dir=fast))


def exit_code(result: TaskResult) -> int:
    """0 for success, else the failed executor's code (1 if there is none): the scheduler's
    own view (FAILED, ExitCode) then agrees with the task's."""
    if result.state == State.COMPLETE:
        return 0
    codes = [log.exit_code for log in result.executor_logs if log.exit_code != 0]
    return min(max(codes[-1], 1), 255) if codes else 1


async def run_task(base: Path) -> int:
    taskdir = TaskDir(base)
    native_id = native_id_from_env(os.environ)
    started = {
        "native_id": native_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
    }
    write_json(base / STARTED_FILE, {**started, "time": rfc3339(now())}, sync=False)
    received: list[str] = []
    result = TaskResult()
    scratch = scratch_dir()
    try:
        await _run(base, taskdir, result, received, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_json(
        base / RESULT_FILE,
        {
            **started,
            "state": result.state.value,
            "executor_logs": [e.model_dump(mode="json") for e in result.executor_logs],
            "system_logs": result.system_logs,
            "signal": received[0] if received else None,
            "end_time": rfc3339(now()),
        },
    )
    return exit_code(result)


async def _run(
    base: Path, taskdir: TaskDir, result: TaskResult, received: list[str], scratch: Path
) -> None:
    try:
        node = json.loads((base / NODE_FILE).read_text(encoding="utf-8"))
        job = Job.model_validate(node["job"])
        runtime = make_node_runtime(
            str(node.get("runtime", "auto")), scratch, node.get("runtime_options")
        )
        cgroups = CgroupLayout.detect()
    except Exception as exc:  # the gateway reports this as the task's system error
        result.state = State.SYSTEM_ERROR
        result.system_logs.append(f"the node runner could not start the task: {exc!r}")
    else:
        run = TaskRun(
            job, taskdir, runtime, cgroups, log_tail_bytes=int(node.get("log_tail_bytes", 65536))
        )
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            received.append(sig.name)
            run.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(sig, on_signal, sig)
        # TaskRun fills ``run.result``; share it with the caller's result.
        run.result = result
        try:
            await run.run()
        finally:
            cgroups.close()
        if received and result.state == State.CANCELED:
            result.system_logs.append(f"the node runner received {received[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobgate.runner.node")
    parser.add_argument("taskdir", nargs="?", type=Path)
    parser.add_argument("--list", type=Path, help="file of task dirs, one per array index")
    args = parser.parse_args(argv)
    if args.list is not None:
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "-1"))
        lines = args.list.read_text(encoding="utf-8").splitlines()
        if not 0 <= index < len(lines):
            print(f"no task dir for array index {index} in {args.list}", file=sys.stderr)
            return 2
        base = Path(lines[index])
    elif args.taskdir is not None:
        base = args.taskdir
    else:
        parser.error("TASKDIR or --list is required")
    return asyncio.run(run_task(base))


if __name__ == "__main__":
    sys.exit(main())
