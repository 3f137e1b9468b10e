"""The node runner for tasks its own runner (``nodetask.py``) does not run: container
runtimes (podman, docker, apptainer), whose engines cost far more than these imports,
and ``node.json`` files without a ``task`` (written by an older gateway). The full
:class:`~jobgate.runner.executors.TaskRun`, as the local backend runs it, on asyncio.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from jobgate.domain.models import Job
from jobgate.domain.states import State
from jobgate.runner.executors import TaskResult, TaskRun
from jobgate.runner.schedenv import scheduler_env, scheduler_mounts
from jobgate.runner.taskdir import TaskDir
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.cgroups import CgroupLayout
from jobgate.runtimes.hostmounts import HostMount, checked
from jobgate.runtimes.images import ImageCatalog


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


def run_full(
    base: str, node: dict[str, Any], scratch: str, received: list[str]
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Run the task of ``node`` (``node.json``) in ``base``: its final state, executor logs
    (as JSON) and system logs. ``received`` holds the signals that came so far (one that
    came before the runner was ready cancels the task at once) and gains later ones."""
    result = TaskResult()
    asyncio.run(_run(Path(base), node, result, received, Path(scratch)))
    logs = [e.model_dump(mode="json") for e in result.executor_logs]
    return result.state.value, logs, result.system_logs


async def _run(
    base: Path, node: dict[str, Any], result: TaskResult, received: list[str], scratch: Path
) -> None:
    try:
        job = Job.model_validate(node["job"])
        runtime = make_node_runtime(
            str(node.get("runtime", "auto")), scratch, node.get("runtime_options")
        )
        cgroups = CgroupLayout.detect()
    except Exception as exc:  # the gateway reports this as the task's system error
        result.state = State.SYSTEM_ERROR
        result.system_logs.append(f"the node runner could not start the task: {exc!r}")
        return
    run = TaskRun(
        job,
        TaskDir(base),
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
    if received:
        run.cancel()
    # TaskRun fills ``run.result``; share it with the caller's result.
    run.result = result
    try:
        await run.run()
    finally:
        cgroups.close()
    if received and result.state == State.CANCELED:
        result.system_logs.append(f"the node runner received {received[0]}")
