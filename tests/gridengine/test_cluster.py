"""Smoke tests on the real Grid Engine cluster: the qsub options and parsers of the backend
against what qsub/qstat/qdel/qacct really do."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jobgate.backends.gridengine import parse, script
from jobgate.backends.gridengine.backend import gridengine_commands
from jobgate.backends.gridengine.states import lookup
from jobgate.domain.states import State
from tests.gridengine.cluster import SPOOL, GridEngineCluster
from tests.gridengine.test_parse import job


def qstat(cluster: GridEngineCluster) -> dict[str, parse.QueueEntry]:
    return parse.qstat_xml(cluster.run("qstat", "-xml", "-u", "root").stdout)


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def qsub(cluster: GridEngineCluster, *args: str) -> parse.Submitted:
    res = cluster.run("qsub", *script.COMMON, *args)
    return parse.qsub_terse(res.stdout)


def sleeper(tmp_path: Path, seconds: int) -> str:
    path = tmp_path / "sleep.sh"
    path.write_text(f'#!/bin/sh\necho "$JOB_ID.$SGE_TASK_ID $*"\nsleep {seconds}\n')
    return str(path)


def test_single_job_and_array_queue_run_and_are_deleted(
    gridengine_cluster: GridEngineCluster, tmp_path: Path
) -> None:
    ge = gridengine_cluster
    body = sleeper(tmp_path, 60)
    single = qsub(
        ge, *script.placement("jg-smoke-single", str(tmp_path / "single.out"), str(tmp_path)), body
    )
    array = qsub(
        ge,
        *script.placement("jg-smoke-array", str(tmp_path / "$TASK_ID.out"), str(tmp_path), tasks=3),
        body,
    )
    assert single.tasks == () and len(array.tasks) == 3
    ids = [*single.native_ids, *array.native_ids]
    assert ids[1:] == [f"{array.job_number}.{t}" for t in (1, 2, 3)]

    # Every id is listed, queued or running, under its name.
    seen = qstat(ge)
    for nid in ids:
        assert nid in seen, (nid, seen)
        assert lookup(seen[nid].state).active in (State.QUEUED, State.RUNNING)
    assert seen[ids[0]].name == "jg-smoke-single" and seen[ids[2]].name == "jg-smoke-array"
    wait_for(lambda: all(lookup(qstat(ge)[n].state).active == State.RUNNING for n in ids))
    assert qstat(ge)[ids[1]].queue == f"{ge.queue}@{ge.host}"

    # qdel of the whole array and of the single job: gone from qstat.
    ge.run("qdel", single.job_number, array.job_number)
    wait_for(lambda: not set(ids) & set(qstat(ge)))
    # ... and asking for them by number says they don't exist.
    res = ge.run("qstat", "-j", f"{single.job_number},{array.job_number}", check=False)
    assert sorted(parse.unknown_jobs(res.stderr)) == sorted([single.job_number, array.job_number])


def test_a_finished_job_leaves_qstat(gridengine_cluster: GridEngineCluster, tmp_path: Path) -> None:
    ge = gridengine_cluster
    out = tmp_path / "done.out"
    job = qsub(
        ge, *script.placement("jg-smoke-done", str(out), str(tmp_path)), sleeper(tmp_path, 0)
    )
    wait_for(lambda: job.job_number not in qstat(ge))
    wait_for(out.exists)
    # The job saw its own id, and no array task id ("undefined" for single jobs).
    assert out.read_text().split()[0] == f"{job.job_number}.undefined"


def test_multi_core_memory_and_time_options_are_accepted(
    gridengine_cluster: GridEngineCluster, tmp_path: Path
) -> None:
    ge = gridengine_cluster
    opts = script.options(
        job(cpu_cores=2, ram_gb=1, backend_parameters={"time": "0:01:00", "queue": ge.queue}),
        script.Defaults(pe=ge.pe),
    )
    env_file = tmp_path / "env.txt"
    body = tmp_path / "env.sh"
    body.write_text(f"#!/bin/sh\nenv > {env_file}\n")
    sub = qsub(
        ge,
        *opts,
        *script.placement("jg-smoke-pe", str(tmp_path / "pe.out"), str(tmp_path)),
        str(body),
    )
    wait_for(env_file.exists)
    wait_for(lambda: "NSLOTS=2" in env_file.read_text())
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert env["JOB_ID"] == sub.job_number and env["SGE_TASK_ID"] == "undefined"
    assert env["PE"] == ge.pe and env["QUEUE"] == ge.queue and env["JOB_NAME"] == "jg-smoke-pe"


def test_impossible_requests_are_refused_at_submit(
    gridengine_cluster: GridEngineCluster, tmp_path: Path
) -> None:
    ge = gridengine_cluster
    place = script.placement("jg-smoke-no", str(tmp_path / "no.out"), str(tmp_path))
    for extra in (["-pe", ge.pe, "9999"], ["-q", "nope.q"]):
        res = ge.run("qsub", *script.COMMON, *extra, *place, sleeper(tmp_path, 0), check=False)
        assert res.returncode != 0, extra
        assert not parse.is_transient(res.stderr), res.stderr
        assert parse.error_text(res.stderr)


async def test_commands_reach_the_cluster(gridengine_cluster: GridEngineCluster) -> None:
    cmds = gridengine_commands(
        gridengine_cluster.env["SGE_ROOT"], gridengine_cluster.env["SGE_CELL"]
    )
    res = await cmds.run("qstat", ["-xml", "-u", "root"])
    assert res.returncode == 0, res.stderr
    parse.qstat_xml(res.stdout)


def test_another_session_reuses_the_cluster_and_leaves_it_running(
    gridengine_cluster: GridEngineCluster,
) -> None:
    """A second test session (another process) starting and stopping its cluster while
    this one runs: same daemons, and they are still up afterwards."""
    ge = gridengine_cluster
    pid_file = SPOOL / "qmaster" / "qmaster.pid"
    before = pid_file.read_text().strip()
    code = (
        "from tests.gridengine.cluster import GridEngineCluster\n"
        "c = GridEngineCluster().start()\n"
        "c.stop()\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[2],  # the repository, where ``tests`` imports from
    )
    assert res.returncode == 0, res.stderr
    assert pid_file.read_text().strip() == before
    assert ge.responding()
    ge.wait_ready(timeout=10)
