"""The Grid Engine backend against the real test cluster, driven as the dispatcher drives
it: submit staged task directories, poll until final, cancel, restart.

What a user relies on: jobs run through Grid Engine (not in the gateway) with their exit
codes and output; waiting is QUEUED with Grid Engine's reason (held, error state) and
running is RUNNING; alike jobs go out as one array; a cancel and a time limit end a job
the way they should although Grid Engine kills it with SIGKILL (no result file); a
gateway restart never submits a job twice. (A qmaster outage: test_gridengine_jobs.py.)
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobgate.backends.base import BackendStatus, SubmitContext, SubmitError
from jobgate.backends.gridengine import script
from jobgate.backends.gridengine.backend import GridEngineBackend, GridEngineConfig
from jobgate.domain.models import Job, JobRecord, new_job_id
from jobgate.domain.states import FINAL, State
from jobgate.runner.taskdir import TaskDir
from tests.gridengine.cluster import GridEngineCluster


def make_job(command: str, **resources: Any) -> Job:
    return Job.model_validate(
        {
            "id": new_job_id(),
            "creation_time": datetime.now(UTC),
            "executors": [{"image": "x", "command": ["sh", "-c", command]}],
            "resources": resources or None,
        }
    )


def record(job: Job, state: State, native_id: str | None = None) -> JobRecord:
    return JobRecord(
        id=job.id,
        state=state,
        spec={},
        logs=None,
        created_at=job.creation_time,
        backend="gridengine",
        attempt=1,
        native_id=native_id,
    )


def new_backend(cluster: GridEngineCluster, shared: Path, **options: Any) -> GridEngineBackend:
    config = GridEngineConfig(
        shared_dir=shared,
        python=sys.executable,
        runtime="process",
        sge_root=cluster.env["SGE_ROOT"],
        sge_cell=cluster.env["SGE_CELL"],
        defaults=script.Defaults(queue=cluster.queue, pe=cluster.pe),
        **{"array_window": 0.0, **options},
    )
    return GridEngineBackend(config, name="ge")


@pytest.fixture()
async def ge(
    gridengine_cluster: GridEngineCluster, tmp_path: Path
) -> AsyncIterator[GridEngineBackend]:
    b = new_backend(gridengine_cluster, tmp_path / "shared")
    yield b
    await b.close()


async def submitted(b: GridEngineBackend, job: Job) -> str:
    taskdir = TaskDir(b.jobs_root / job.id)
    await asyncio.to_thread(taskdir.prepare, job)
    return await b.submit(job, SubmitContext(attempt=1, taskdir=taskdir))


async def until(
    b: GridEngineBackend,
    nid: str,
    done: Callable[[BackendStatus], bool],
    patience: float = 60,
) -> tuple[BackendStatus, list[BackendStatus]]:
    """Poll ``nid`` until ``done``; the status then and every status seen on the way."""
    seen: list[BackendStatus] = []
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        status = (await b.poll([nid])).get(nid)
        assert status is not None, nid
        seen.append(status)
        if done(status):
            return status, seen
        await asyncio.sleep(0.3)
    raise AssertionError(f"{nid}: {seen[-1] if seen else None}")


def is_final(status: BackendStatus) -> bool:
    return status.state in FINAL


async def test_a_job_runs_on_grid_engine_with_its_output(ge: GridEngineBackend) -> None:
    job = make_job("echo out; echo err >&2")
    nid = await submitted(ge, job)
    assert nid.isdigit()
    status, seen = await until(ge, nid, is_final)
    assert status.state == State.COMPLETE, status
    (log,) = status.executor_logs
    assert log.exit_code == 0 and log.stdout == "out\n" and log.stderr == "err\n"
    assert status.metadata["gridengine_job_id"] == nid
    assert status.metadata["backend"] == "ge" and status.metadata["type"] == "gridengine"
    # On the way it was queued or running in Grid Engine, with its state in the detail.
    assert {s.state for s in seen[:-1]} <= {State.QUEUED, State.RUNNING}


async def test_failure_is_an_executor_error_with_its_code(ge: GridEngineBackend) -> None:
    nid = await submitted(ge, make_job("echo no >&2; exit 7"))
    status, _ = await until(ge, nid, is_final)
    assert status.state == State.EXECUTOR_ERROR
    assert status.executor_logs[0].exit_code == 7 and status.executor_logs[0].stderr == "no\n"


async def test_alike_jobs_share_one_array_and_unlike_ones_do_not(
    gridengine_cluster: GridEngineCluster, tmp_path: Path
) -> None:
    b = new_backend(gridengine_cluster, tmp_path / "shared", array_window=0.3)
    try:
        jobs = [make_job(f"echo task {i}") for i in range(3)]
        other = make_job("echo two cores", cpu_cores=2)
        ids = await asyncio.gather(*(submitted(b, j) for j in [*jobs, other]))
        array = ids[0].split(".")[0]
        assert sorted(ids[:3]) == [f"{array}.{t}" for t in (1, 2, 3)]
        assert "." not in ids[3]
        assert b.submit_calls == 2
        for i, nid in enumerate(ids[:3]):
            status, _ = await until(b, nid, is_final)
            assert status.state == State.COMPLETE, status
            assert status.executor_logs[0].stdout == f"task {i}\n"
        status, _ = await until(b, ids[3], is_final)
        assert status.executor_logs[0].stdout == "two cores\n"
    finally:
        await b.close()


async def test_waiting_is_queued_with_the_reason_then_running(
    ge: GridEngineBackend, gridengine_cluster: GridEngineCluster
) -> None:
    cluster = gridengine_cluster
    cluster.run("qmod", "-d", cluster.queue)  # nothing starts while the queue is disabled
    try:
        nid = await submitted(ge, make_job("sleep 1; echo late"))
        status, _ = await until(ge, nid, lambda s: "qw" in (s.detail or ""))
        assert status.state == State.QUEUED and "waiting" in (status.detail or "")
        cluster.run("qhold", nid)
        status, _ = await until(ge, nid, lambda s: "hqw" in (s.detail or ""))
        assert status.state == State.QUEUED and "held" in (status.detail or "")
        cluster.run("qrls", nid)
    finally:
        cluster.run("qmod", "-e", cluster.queue)
    status, _ = await until(ge, nid, lambda s: s.state != State.QUEUED)
    assert status.state in (State.RUNNING, State.COMPLETE)
    status, _ = await until(ge, nid, is_final)
    assert status.state == State.COMPLETE


async def test_an_error_state_is_queued_with_grid_engine_s_reason(
    ge: GridEngineBackend, gridengine_cluster: GridEngineCluster
) -> None:
    cluster = gridengine_cluster
    cluster.run("qmod", "-d", cluster.queue)
    try:
        job = make_job("echo never")
        nid = await submitted(ge, job)
        # Its working directory goes before it starts: Grid Engine puts it in state E.
        await asyncio.to_thread(TaskDir(ge.jobs_root / job.id).remove)
    finally:
        cluster.run("qmod", "-e", cluster.queue)
    status, _ = await until(ge, nid, lambda s: "Eqw" in (s.detail or ""))
    assert status.state == State.QUEUED
    assert "qmod -cj" in (status.detail or "") and "chdir" in (status.detail or "")
    await ge.cancel(nid)
    status, _ = await until(ge, nid, is_final)
    assert status.state == State.CANCELED


async def test_cancel_reaches_a_running_job(ge: GridEngineBackend) -> None:
    job = make_job("echo started; sleep 60")
    nid = await submitted(ge, job)
    await until(ge, nid, lambda s: s.state == State.RUNNING)
    started = ge.jobs_root / job.id / "started.json"
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    t0 = time.monotonic()
    await ge.cancel(nid)
    status, _ = await until(ge, nid, is_final)
    assert status.state == State.CANCELED and time.monotonic() - t0 < 20
    assert "qdel" in (status.detail or "")


async def test_a_time_limit_is_an_executor_error_from_accounting(ge: GridEngineBackend) -> None:
    nid = await submitted(ge, make_job("sleep 60", backend_parameters={"time": "3"}))
    status, _ = await until(ge, nid, is_final, patience=90)
    assert status.state == State.EXECUTOR_ERROR, status
    assert "h_rt" in (status.detail or "")


async def test_a_job_submitted_just_before_a_crash_is_found_by_name(
    gridengine_cluster: GridEngineCluster, tmp_path: Path
) -> None:
    first = new_backend(gridengine_cluster, tmp_path)
    job = make_job("sleep 2; echo adopted")
    nid = await submitted(first, job)
    never = make_job("echo never submitted")
    await asyncio.to_thread(TaskDir(first.jobs_root / never.id).prepare, never)
    await first.close()

    # The gateway died before it recorded the id: the job is INITIALIZING, no native id.
    again = new_backend(gridengine_cluster, tmp_path)
    try:
        adopted = await again.reattach(
            [record(job, State.INITIALIZING), record(never, State.INITIALIZING)]
        )
        assert adopted == {job.id: nid}
        assert nid in await again.known_ids()
        status, _ = await until(again, nid, is_final)
        assert status.state == State.COMPLETE
        assert status.executor_logs[0].stdout == "adopted\n"
        assert again.submit_calls == 0
    finally:
        await again.close()


async def test_a_refusal_names_grid_engine_s_reason(ge: GridEngineBackend) -> None:
    with pytest.raises(SubmitError) as err:
        await submitted(ge, make_job("true", backend_parameters={"queue": "nope.q"}))
    assert not err.value.transient
    assert "nope.q" in str(err.value)
