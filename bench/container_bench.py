"""Container start overhead and end-to-end task rate: podman vs bubblewrap vs processes.

    .venv/bin/python bench/container_bench.py              # 30 starts, 60 tasks per runtime
    .venv/bin/python bench/container_bench.py -n 10 -t 20 --runtimes podman,bwrap

**start**: one-executor tasks (``true``) through ``TaskRun`` one after another, no server:
the wall time per executor, which for podman includes image check, container create, start,
inspect and removal. **e2e**: a ``jobgate serve`` per runtime (SQLite, default slots), N
trivial tasks submitted at once over HTTP, tasks per second until all are COMPLETE.

podman runs a local busybox image (imported here from Debian's static busybox when
missing: there is no registry). Runtimes that are not installed are skipped, and say so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/jobgate-bench-busybox:latest"
TES = "/ga4gh/tes/v1"
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def podman_argv(*args: str) -> list[str]:
    runtime = "/usr/sbin/runc" if os.path.exists("/usr/sbin/runc") else ""
    return ["podman", *(["--runtime", runtime] if runtime else []), *args]


def ensure_image() -> str | None:
    """The busybox image for podman; None (with the reason printed) when it cannot be."""
    if shutil.which("podman") is None:
        print("podman: not installed, skipped")
        return None
    exists = subprocess.run(podman_argv("image", "exists", IMAGE), check=False)
    if exists.returncode == 0:
        return IMAGE
    busybox = shutil.which("busybox")
    if busybox is None:
        print("podman: no busybox to build the image from, skipped")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in subprocess.run(
            [busybox, "--list"], capture_output=True, text=True
        ).stdout.split():
            if applet != "busybox":
                os.symlink("busybox", root / "bin" / applet)
        (root / "tmp").mkdir()
        tar = subprocess.Popen(["tar", "-C", tmp, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            podman_argv("import", "-", IMAGE), stdin=tar.stdout, check=True, capture_output=True
        )
        tar.wait()
    return IMAGE


def settings_env(runtime: str) -> dict[str, str]:
    return {"JOBGATE_RUNTIME": runtime, "JOBGATE_IMAGE_MAP": f"alpine={IMAGE}"}


# -- start overhead ------------------------------------------------------------------------


async def start_overhead(runtime_name: str, n: int, base: Path) -> list[float]:
    sys.path.insert(0, str(ROOT / "src"))
    from jobgate.config import Settings
    from jobgate.domain.models import Job, now
    from jobgate.runner.executors import TaskRun
    from jobgate.runner.taskdir import TaskDir
    from jobgate.runtimes.cgroups import CgroupLayout
    from jobgate.runtimes.choice import make_runtime

    os.environ.update(settings_env(runtime_name))
    runtime = make_runtime(Settings(data_dir=base / "data"))
    cgroups = CgroupLayout.detect()
    walls = []
    try:
        for _ in range(n):
            job = Job.model_validate(
                {
                    "id": str(uuid.uuid4()),
                    "creation_time": now(),
                    "executors": [{"image": "alpine", "command": ["true"]}],
                }
            )
            td = TaskDir(base / job.id)
            td.prepare(job)
            t0 = time.perf_counter()
            result = await TaskRun(job, td, runtime, cgroups, log_tail_bytes=65536).run()
            walls.append(time.perf_counter() - t0)
            if result.state.value != "COMPLETE":
                raise SystemExit(f"{runtime_name}: {result.state.value} {result.system_logs}")
            td.remove()
    finally:
        cgroups.close()
    return walls


# -- end to end ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def e2e(runtime_name: str, n: int, base: Path) -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **settings_env(runtime_name), "JOBGATE_POLL_INTERVAL": "0.5"}
    env["JOBGATE_AUTH"] = "none"  # a loopback benchmark: no credentials to check
    log = (base / "server.log").open("wb")
    argv = [sys.executable, "-m", "jobgate", "serve", "--port", str(port)]
    argv += ["--data-dir", str(base / "data"), "--log-level", "warning"]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=url + TES, timeout=30) as tes:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"{runtime_name}: server did not start")
                time.sleep(0.1)
            task = {"executors": [{"image": "alpine", "command": ["true"]}]}
            t0 = time.perf_counter()
            ids = [tes.post("/tasks", json=task).json()["id"] for _ in range(n)]
            pending = set(ids)
            while pending:
                listed = tes.get("/tasks", params={"view": "MINIMAL", "page_size": 2048}).json()
                states: dict[str, Any] = {t["id"]: t["state"] for t in listed["tasks"]}
                bad = [i for i in pending if states.get(i) in FINAL - {"COMPLETE"}]
                if bad:
                    raise SystemExit(f"{runtime_name}: task {bad[0]} {states[bad[0]]}")
                pending = {i for i in pending if states.get(i) != "COMPLETE"}
                time.sleep(0.05)
            return n / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=30, help="executor starts per runtime")
    parser.add_argument("-t", type=int, default=60, help="end-to-end tasks per runtime")
    parser.add_argument("--runtimes", default="process,bwrap,podman")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    if "podman" in runtimes and ensure_image() is None:
        runtimes.remove("podman")
    if "bwrap" in runtimes and shutil.which("bwrap") is None:
        print("bwrap: not installed, skipped")
        runtimes.remove("bwrap")
    print(f"{os.cpu_count()} cores; the machine may be shared: compare rows taken together\n")
    print(f"{'runtime':8} {'start median':>13} {'start p90':>10} {'e2e tasks/s':>12}")
    for name in runtimes:
        with tempfile.TemporaryDirectory(prefix=f"jgbench-{name}-") as tmp:
            walls = asyncio.run(start_overhead(name, args.n, Path(tmp) / "start"))
            rate = e2e(name, args.t, Path(tmp))
        walls.sort()
        p90 = walls[min(len(walls) - 1, int(len(walls) * 0.9))]
        print(
            f"{name:8} {statistics.median(walls) * 1000:10.1f} ms {p90 * 1000:7.1f} ms {rate:12.1f}"
        )


if __name__ == "__main__":
    main()
