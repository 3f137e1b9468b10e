"""Start-up of the batch node runner (``python -m jobgate.runner.node TASKDIR``), the
process every Slurm or Grid Engine job of jobgate runs on its compute node.

    .venv/bin/python bench/node_start.py                          # this tree, bwrap
    .venv/bin/python bench/node_start.py --src /other/src --src src -n 30 --runtime process

For each ``--src`` tree, ``-n`` runs of one task with one ``true`` executor, in a fresh
interpreter each (as the batch script starts it), interleaved across trees. Reported
(medians): wall time from the ``exec`` of the interpreter to the first executor's spawn
(``posix_spawn`` or subprocess's ``fork_exec``), the runner's own CPU (user + system) up
to then, and the whole job's wall time and CPU (runner, sandbox and ``true``, reaped);
then the total ``-X importtime`` of the runner's imports and the largest of them. The
first row, a bare ``python -c pass``, is the floor, and shows how busy the machine is
(wall well above CPU: other processes had the cores).

The task directory's ``node.json`` holds both what older trees read (``job``) and what
newer ones read (``task``). The spawn is timed by a shim that runs the module the way
``-m`` does, with both spawn primitives wrapped; CLOCK_MONOTONIC is shared by all
processes. This machine may be shared: compare figures taken together.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Runs the node runner as ``python -m`` would, recording the first spawn's moment and
# the process's CPU so far in the file named by argv[1].
SHIM = r"""
import os, sys, time, _posixsubprocess
_out, sys.argv = sys.argv[1], ["node", *sys.argv[2:]]
def _stamp(spawn):
    def first(*a, **k):
        if not os.path.exists(_out):
            with open(_out, "w") as f:
                f.write(f"{time.monotonic_ns()} {time.process_time()}")
        return spawn(*a, **k)
    return first
# The two ways a runner may start its executor: subprocess (fork_exec), posix_spawn.
_posixsubprocess.fork_exec = _stamp(_posixsubprocess.fork_exec)
os.posix_spawn = _stamp(os.posix_spawn)
import runpy
runpy.run_module("jobgate.runner.node", run_name="__main__", alter_sys=True)
"""


def write_task(base: Path, runtime: str) -> None:
    shutil.rmtree(base, ignore_errors=True)
    (base / "root" / "tmp").mkdir(parents=True)
    executor = {"image": "alpine", "command": ["true"]}
    node = {
        "job": {
            "id": base.name,
            "creation_time": "2026-01-01T00:00:00Z",
            "executors": [executor],
        },
        "task": {
            "id": base.name,
            "cpu_cores": 1,
            "ram_bytes": None,
            "executors": [{**executor, "env": {}, "ignore_error": False}],
        },
        "runtime": runtime,
        "runtime_options": {},
        "log_tail_bytes": 65536,
    }
    (base / "node.json").write_text(json.dumps(node))


def one_run(python: str, src: str, base: Path, runtime: str) -> dict[str, float]:
    write_task(base, runtime)
    stamp = base.parent / f"{base.name}.spawn"
    stamp.unlink(missing_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic_ns()
    proc = subprocess.run(
        [python, "-c", SHIM, str(stamp), str(base)], env=env, capture_output=True, text=True
    )
    wall = (time.monotonic_ns() - t0) / 1e6
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads((base / "result.json").read_text())
    if result["state"] != "COMPLETE":
        raise SystemExit(f"{src}: the task ended {result}: {proc.stderr[-2000:]}")
    spawned_ns, cpu = stamp.read_text().split()
    return {
        "spawn_wall": (int(spawned_ns) - t0) / 1e6,
        "spawn_cpu": float(cpu) * 1000,
        "job_wall": wall,
        "job_cpu": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000,
    }


def bare_run(python: str) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic_ns()
    subprocess.run([python, "-c", "pass"], check=True, env={"PATH": "/usr/bin:/bin"})
    wall = (time.monotonic_ns() - t0) / 1e6
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return {"spawn_wall": wall, "spawn_cpu": cpu, "job_wall": wall, "job_cpu": cpu}


def import_profile(python: str, src: str) -> tuple[float, list[tuple[float, str]]]:
    """Total import time of the runner module (ms) and the largest imports in it."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src}
    res = subprocess.run(
        [python, "-X", "importtime", "-c", "import jobgate.runner.node"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[int, float, str]] = []  # (depth, cumulative ms, module)
    for line in res.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((depth, float(cumulative) / 1000, name.strip()))
    top = [r for r in rows if r[0] == 0]
    total = sum(ms for _, ms, _ in top)
    biggest = sorted(((ms, name) for d, ms, name in rows if d <= 1), reverse=True)[:6]
    return total, biggest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", help="source trees to compare (default: src)")
    ap.add_argument("-n", type=int, default=20, help="runs per tree")
    ap.add_argument("--runtime", default="bwrap", choices=["bwrap", "process"])
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    trees = [str(Path(s).resolve()) for s in (args.src or [str(ROOT / "src")])]
    work = Path(tempfile.mkdtemp(prefix="jobgate-node-bench-"))
    bare = "python -c pass"
    figures: dict[str, list[dict[str, float]]] = {bare: [], **{t: [] for t in trees}}
    try:
        for t in trees:  # warm the page cache and the bytecode caches
            one_run(args.python, t, work / "warm", args.runtime)
        for i in range(args.n):
            figures[bare].append(bare_run(args.python))
            for t in trees:
                figures[t].append(one_run(args.python, t, work / f"t{i}", args.runtime))
        print(f"runtime {args.runtime}, {args.n} runs per tree, medians (ms):")
        print(f"{'tree':<44} {'to spawn':>9} {'cpu':>7} {'job wall':>9} {'job cpu':>8}")
        for t in figures:
            med: dict[str, Any] = {
                k: statistics.median(r[k] for r in figures[t]) for k in figures[t][0]
            }
            print(
                f"{t[-44:]:<44} {med['spawn_wall']:9.1f} {med['spawn_cpu']:7.1f} "
                f"{med['job_wall']:9.1f} {med['job_cpu']:8.1f}"
            )
        for t in trees:
            total, biggest = import_profile(args.python, t)
            shown = ", ".join(f"{name} {ms:.1f}" for ms, name in biggest)
            print(f"imports of {t[-40:]}: {total:.1f} ms under -X importtime ({shown})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
