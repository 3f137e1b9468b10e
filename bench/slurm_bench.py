"""jobgate → Slurm benchmark on a real single-node cluster started for the run.

    .venv/bin/python bench/slurm_bench.py              # 1,000 jobs per phase
    .venv/bin/python bench/slurm_bench.py --jobs 200   # quicker

Phases, each on the same cluster (``tests/slurm/cluster.py``: munged, slurmctld, slurmd
in a temp dir; the node is declared with 8 CPUs so 8 trivial jobs run at once). Each
phase first submits with the partition DOWN (Slurm queues, nothing runs: the submission
rate is not slowed by jobs running on the same two cores), then sets it UP and times the
run until every job is final.

* ``plain``: ``sbatch`` in a loop (one process per job, a one-line ``true`` script);
  finished = gone from ``squeue``'s active states.
* ``arrays``: the same number of trivial jobs posted to jobgate's native bulk API in one
  request; jobgate batches alike jobs into ``sbatch --array``. Submitted = every job is
  in Slurm's queue; finished = every job final in jobgate (result read back, logs kept).
* ``singles``: the same with arrays off (``JOBGATE_SLURM_MAX_ARRAY=1``): one sbatch per
  job, at most ``--rate`` per second (token bucket).

jobgate's trivial job runs the node runner (a Python process) around ``true`` in a
bubblewrap sandbox, so its per-job cost on the node is higher than plain ``sbatch``'s
``/bin/true``: both figures are printed. Server, Slurm and load generator share this
machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import Server
from tests.slurm.cluster import SlurmCluster, unavailable

FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def squeue_active(cluster: SlurmCluster) -> int:
    res = subprocess.run(
        ["squeue", "-h", "-r", "-t", "PD,CF,R,CG", "-o", "%i"],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=True,
    )
    return len(res.stdout.split())


def wait_slurm_drained(cluster: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while squeue_active(cluster):
        if time.monotonic() > deadline:
            raise RuntimeError("Slurm did not drain")
        time.sleep(0.5)


def partition(cluster: SlurmCluster, state: str) -> None:
    subprocess.run(
        ["scontrol", "update", "PartitionName=debug", f"State={state}"],
        check=True,
        env=cluster.env,
    )


def plain_sbatch(cluster: SlurmCluster, n: int, work: Path) -> dict[str, float]:
    script = work / "true.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    out = work / "plain"
    out.mkdir()
    partition(cluster, "DOWN")
    t0 = time.monotonic()
    for _ in range(n):
        subprocess.run(
            ["sbatch", "--parsable", f"--output={out}/%j.out", "--cpus-per-task=1", str(script)],
            check=True,
            capture_output=True,
            env=cluster.env,
        )
    submitted = time.monotonic() - t0
    t1 = time.monotonic()
    partition(cluster, "UP")
    wait_slurm_drained(cluster, timeout=3600)
    return {"submit_s": submitted, "run_s": time.monotonic() - t1}


def states(api: httpx.Client) -> dict[str, int]:
    """Jobs by state (each phase has a server of its own: all its jobs are the phase's)."""
    r = api.post("/jobs/summary", json={"group_by": ["state"]})
    r.raise_for_status()
    return {g["state"]: int(g["count"]) for g in r.json()["groups"]}


def through_jobgate(
    cluster: SlurmCluster, n: int, work: Path, name: str, env: dict[str, str]
) -> dict[str, Any]:
    srv = Server(
        work / f"{name}-data",
        {
            "SLURM_CONF": str(cluster.conf),
            "JOBGATE_BACKEND": "slurm",
            "JOBGATE_SLURM_SHARED_DIR": str(work / f"{name}-shared"),
            "JOBGATE_POLL_INTERVAL": "1",
            **env,
        },
    ).start()
    try:
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=120) as api:
            jobs = [{"script": "true", "name": f"{name}-{i}"} for i in range(n)]
            partition(cluster, "DOWN")
            t0 = time.monotonic()
            r = api.post("/jobs/bulk", json={"jobs": jobs})
            r.raise_for_status()
            assert r.json()["succeeded"] == n, r.text[:500]
            posted = time.monotonic() - t0
            # Handed to Slurm: every job is in its queue (jobgate shows them QUEUED both
            # before and after submission, so ask Slurm).
            while squeue_active(cluster) < n:
                time.sleep(0.1)
            submitted = time.monotonic() - t0
            counts = states(api)
            t1 = time.monotonic()
            partition(cluster, "UP")
            while sum(counts.get(s, 0) for s in FINAL) < n:
                time.sleep(0.25)
                counts = states(api)
        return {
            "post_s": posted,
            "submit_s": submitted,
            "run_s": time.monotonic() - t1,
            "states": counts,
        }
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1000.0, help="token bucket for singles")
    ap.add_argument("--only", nargs="*", default=["plain", "arrays", "singles"])
    ap.add_argument("--src", help="the jobgate source tree the server runs (default: installed)")
    ap.add_argument(
        "--node-python",
        help="the python batch jobs run the node runner with (JOBGATE_SLURM_PYTHON; it must "
        "import the tree to measure: jobs get a minimal environment, without PYTHONPATH)",
    )
    args = ap.parse_args()
    extra: dict[str, str] = {}
    if args.src:
        extra["PYTHONPATH"] = str(Path(args.src).resolve())
    if args.node_python:
        extra["JOBGATE_SLURM_PYTHON"] = args.node_python
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="jobgate-slurm-bench-"))
    cluster = SlurmCluster(work / "cluster").start()
    n = args.jobs
    print(f"cluster: 1 node, {cluster.cpus} CPUs declared on a {os.cpu_count()}-core host")
    try:
        if "plain" in args.only:
            p = plain_sbatch(cluster, n, work)
            print(
                f"plain sbatch loop : {n} jobs submitted in {p['submit_s']:.1f}s = "
                f"{n / p['submit_s']:.1f} jobs/s; run to the end in {p['run_s']:.1f}s = "
                f"{n / p['run_s']:.1f} jobs/s completed"
            )
        for name, env in (
            ("arrays", {"JOBGATE_SLURM_SUBMIT_RATE": str(args.rate)}),
            (
                "singles",
                {
                    "JOBGATE_SLURM_MAX_ARRAY": "1",
                    "JOBGATE_SLURM_SUBMIT_RATE": str(args.rate),
                    "JOBGATE_SLURM_SUBMIT_BURST": "100",
                },
            ),
        ):
            if name not in args.only:
                continue
            wait_slurm_drained(cluster, timeout=600)
            r = through_jobgate(cluster, n, work, name, {**env, **extra})
            print(
                f"jobgate {name:<8}: {n} jobs posted in {r['post_s']:.2f}s, all handed to Slurm "
                f"after {r['submit_s']:.1f}s = {n / r['submit_s']:.1f} jobs/s; run to the end "
                f"in {r['run_s']:.1f}s = {n / r['run_s']:.1f} jobs/s completed; {r['states']}"
            )
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
