"""The node side of a batch backend: ``python -m jobgate.runner.node TASKDIR``.

Runs one task's executors in TASKDIR (on a filesystem the gateway shares) with the same
:class:`TaskRun`, runtime and cgroup limits as the local backend, then writes
``TASKDIR/result.json``. The gateway reads that file, so a task's exit codes and output
survive the batch job leaving the scheduler's memory (no accounting database needed).

``TASKDIR/node.json`` (written by the gateway) holds the task and how to run it::

    {"job": {...Job...}, "runtime": "bwrap"|"process"|"auto"|"podman"|…,
     "runtime_options": {...container settings, image map, host mounts...},
     "log_tail_bytes": 65536}

``--list FILE`` reads the task directory from the line of FILE that is this array element's
(``$SLURM_ARRAY_TASK_ID``, 0-based, or ``$SGE_TASK_ID``, 1-based) instead: one script
serves every element of a job array. The files of the task directory: ``nodefiles.py``.

SIGTERM/SIGINT (a cancel, time limit or preemption) kill the running executor; the result
then records the signal, and the gateway asks the scheduler why it came.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobgate.domain.models import Job, now, rfc3339
from jobgate.domain.states import State
from jobgate.runner.executors import TaskResult, TaskRun
from jobgate.runner.nodefiles import NODE_FILE, RESULT_FILE, STARTED_FILE, write_json
from jobgate.runner.schedenv import scheduler_env, scheduler_mounts
from jobgate.runner.taskdir import TaskDir
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.cgroups import CgroupLayout
from jobgate.runtimes.hostmounts import HostMount, checked
from jobgate.runtimes.images import ImageCatalog


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
    with contextlib.suppress(ValueError):
        if env.get("SLURM_ARRAY_TASK_ID"):
            return int(env["SLURM_ARRAY_TASK_ID"])
        if env.get("SGE_TASK_ID") not in (None, "", "undefined"):
            return int(env["SGE_TASK_ID"]) - 1
    return -1


def queue_from_env(env: Mapping[str, str]) -> str | None:
    """The partition (Slurm) or queue (Grid Engine) the run landed in."""
    return env.get("SLURM_JOB_PARTITION") or env.get("QUEUE")


def make_node_runtime(name: str, scratch: Path, options: dict[str, Any] | None = None) -> Runtime:
    """The runtime ``name``; bwrap builds its sandbox ``/etc`` under ``scratch``. Container
    runtimes are built as the gateway builds its own, from the gateway's ``options``."""
    # Imported here: the bwrap module is only needed when chosen.
    from jobgate.runtimes.bwrap import BwrapRuntime, bwrap_available
    from jobgate.runtimes.process import ProcessRuntime

    options = options or {}
    mounts = tuple(checked(HostMount(**m)) for m in options.get("host_mounts") or ())
    if name == "auto":
        name = "bwrap" if bwrap_available() else "process"
    runtime: Runtime
    if name == "bwrap":
        catalog = ImageCatalog(options.get("image_map") or {})
        # The sandbox's user maps to the node runner's own uid whatever it is called
        # inside; called by that uid's number, scheduler tools work: srun's step requests
        # carry getuid(), which must be the job owner's (a nobody inside is refused).
        runtime = BwrapRuntime(
            etc_dir=scratch / "etc",
            catalog=catalog,
            network=bool(options.get("executor_network", False)),
            run_as=(os.geteuid(), os.getegid()),
        )
    elif name == "process":
        runtime = ProcessRuntime()
    elif name in ("podman", "docker", "apptainer", "singularity"):
        # Imported here: settings and engines cost start-up time bwrap jobs need not pay.
        from jobgate.config import Settings
        from jobgate.runtimes.choice import make_runtime

        settings = Settings(**{**options, "runtime": name, "data_dir": scratch})
        runtime = make_runtime(settings)
    else:
        raise ValueError(f"runtime {name!r} is not known on batch nodes")
    runtime.host_mounts = mounts
    return runtime


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
        "partition": queue_from_env(os.environ),
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
            job,
            taskdir,
            runtime,
            cgroups,
            log_tail_bytes=int(node.get("log_tail_bytes", 65536)),
            base_env=scheduler_env(os.environ),
            mounts=scheduler_mounts(os.environ),
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
        index = array_index_from_env(os.environ)
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
