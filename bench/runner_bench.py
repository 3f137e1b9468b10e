"""Runner micro-benchmark: N trivial tasks through ``TaskRun`` directly (no server, no DB).

    .venv/bin/python bench/runner_bench.py                      # 300 tasks, bwrap and process
    .venv/bin/python bench/runner_bench.py -n 500 -c 4 --runtime bwrap
    .venv/bin/python bench/runner_bench.py --src /other/checkout/src --src src --rounds 5

Each task does what the dispatcher does around the local backend: ``TaskDir.prepare`` in a
thread, ``TaskRun.run`` (one ``true`` executor), ``TaskDir.remove`` in a thread; ``-c``
tasks run at once. Reported per task: CPU of the process (all threads), CPU of the
event-loop thread alone (the part that competes with the API), CPU of the reaped children
(sh, bwrap, ``true``), thread-pool hops, and wall time.

Every measurement runs in a fresh interpreter; with several ``--src`` trees and
``--rounds``, runs are interleaved and the median of each figure is shown, since this
machine may be shared (compare figures taken together, not across invocations).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("rate", "wall", "cpu", "loop", "children", "hops")


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting submissions (``asyncio.to_thread`` hops)."""

    submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        CountingExecutor.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def run_batch(n: int, concurrency: int, runtime: Any, cgroups: Any, base: Path) -> None:
    from jobgate.domain.models import Job, now
    from jobgate.runner.executors import TaskRun
    from jobgate.runner.taskdir import TaskDir

    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one() -> None:
        async with sem:
            job = Job.model_validate(
                {
                    "id": str(uuid.uuid4()),
                    "creation_time": now(),
                    "executors": [{"image": "alpine", "command": ["true"]}],
                }
            )
            td = TaskDir(base / job.id)
            await asyncio.to_thread(td.prepare, job)
            result = await TaskRun(job, td, runtime, cgroups, log_tail_bytes=65536).run()
            if result.state.value != "COMPLETE":
                failures.append(f"{result.state.value}: {result.system_logs}")
            await asyncio.to_thread(td.remove)

    await asyncio.gather(*(one() for _ in range(n)))
    if failures:
        raise SystemExit(f"{len(failures)} tasks failed, e.g. {failures[0]}")


def measure(runtime_name: str, n: int, concurrency: int, base: Path) -> dict[str, float]:
    """One measurement in this interpreter: per-task figures (ms) and tasks per second."""
    from jobgate.runtimes.base import Runtime
    from jobgate.runtimes.bwrap import BwrapRuntime
    from jobgate.runtimes.cgroups import CgroupLayout
    from jobgate.runtimes.process import ProcessRuntime

    runtime: Runtime
    if runtime_name == "process":
        runtime = ProcessRuntime()
    else:
        try:  # newer trees copy /etc once, into a dir of ours
            runtime = BwrapRuntime(etc_dir=base / "sandbox-etc")  # type: ignore[call-arg]
        except TypeError:
            runtime = BwrapRuntime()
    cgroups = CgroupLayout.detect(f"jobgate-bench-{runtime_name}")
    loop = asyncio.new_event_loop()
    loop.set_default_executor(CountingExecutor())
    try:
        loop.run_until_complete(run_batch(min(n, 20), concurrency, runtime, cgroups, base))
        hops0 = CountingExecutor.submitted
        t0, c0, l0 = time.perf_counter(), os.times(), time.thread_time()
        loop.run_until_complete(run_batch(n, concurrency, runtime, cgroups, base))
        t1, c1, l1 = time.perf_counter(), os.times(), time.thread_time()
    finally:
        loop.close()
        cgroups.close()
    per = 1000 / n
    return {
        "rate": n / (t1 - t0),
        "wall": (t1 - t0) * per,
        "cpu": ((c1.user + c1.system) - (c0.user + c0.system)) * per,
        "loop": (l1 - l0) * per,
        "children": (
            (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
        )
        * per,
        "hops": (CountingExecutor.submitted - hops0) / n,
    }


def row(label: str, runtime: str, figs: dict[str, float]) -> str:
    return (
        f"{label:24} {runtime:8} {figs['rate']:7.1f}/s  wall {figs['wall']:6.2f} ms  "
        f"cpu {figs['cpu']:5.2f} ms  loop {figs['loop']:5.2f} ms  "
        f"children {figs['children']:5.2f} ms  hops {figs['hops']:3.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=300, help="tasks per measurement (default 300)")
    p.add_argument("-c", "--concurrency", type=int, default=os.cpu_count() or 1)
    p.add_argument("--runtime", default="bwrap,process", help="comma-separated list")
    p.add_argument("--rounds", type=int, default=1, help="measurements per tree and runtime")
    p.add_argument(
        "--src", type=Path, action="append", help="jobgate source tree (repeatable; default src)"
    )
    p.add_argument("--dir", type=Path, default=None, help="where task dirs go (default: $TMPDIR)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    srcs = [s.resolve() for s in args.src or [ROOT / "src"]]

    if args.one:  # a single measurement, as JSON, for the parent
        sys.path.insert(0, str(srcs[0]))
        with tempfile.TemporaryDirectory(prefix="jobgate-runner-bench-", dir=args.dir) as tmp:
            figs = measure(args.runtime, args.n, args.concurrency, Path(tmp))
        print(json.dumps(figs))
        return

    print(f"{args.n} tasks per run, concurrency {args.concurrency}, {args.rounds} round(s)")
    runtimes = args.runtime.split(",")
    results: dict[tuple[Path, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for runtime in runtimes:
            for src in srcs:
                cmd = [sys.executable, __file__, "--one", "--src", str(src)]
                cmd += ["--runtime", runtime, "-n", str(args.n), "-c", str(args.concurrency)]
                if args.dir:
                    cmd += ["--dir", str(args.dir)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                figs = json.loads(out.splitlines()[-1])
                results.setdefault((src, runtime), []).append(figs)
                if args.rounds > 1:
                    print(row(str(src)[-24:], runtime, figs), file=sys.stderr, flush=True)
    if args.rounds > 1:
        print("median of the rounds:")
    for (src, runtime), runs in results.items():
        median = {k: statistics.median(r[k] for r in runs) for k in FIGURES}
        print(row(str(src)[-24:], runtime, median))


if __name__ == "__main__":
    main()
