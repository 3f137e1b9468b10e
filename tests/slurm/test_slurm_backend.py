"""The SlurmBackend object against the real test cluster: what the dispatcher relies on
when a gateway restarts, and when Slurm forgets finished jobs (MinJobAge=5 here)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from jobgate.backends.base import BackendStatus, SubmitContext
from jobgate.backends.batch.ratelimit import TokenBucket
from jobgate.backends.slurm import SlurmBackend, SlurmConfig
from jobgate.domain.models import Job, JobRecord, new_job_id
from jobgate.domain.states import FINAL, State
from jobgate.runner.taskdir import TaskDir
from tests.slurm.cluster import SlurmCluster


def backend(cluster: SlurmCluster, shared: Path) -> SlurmBackend:
    return SlurmBackend(
        SlurmConfig(
            shared_dir=shared,
            python=sys.executable,
            runtime="process",
            slurm_conf=str(cluster.conf),
            array_window=0,
        )
    )


def make_job(script: str) -> Job:
    return Job.model_validate(
        {
            "id": new_job_id(),
            "creation_time": datetime.now(UTC),
            "executors": [{"image": "x", "command": ["sh", "-c", script]}],
        }
    )


def record(job: Job, state: State, native_id: str | None = None) -> JobRecord:
    return JobRecord(
        id=job.id,
        state=state,
        spec={},
        logs=None,
        created_at=job.creation_time,
        backend="slurm",
        attempt=1,
        native_id=native_id,
    )


async def submitted(b: SlurmBackend, job: Job) -> str:
    taskdir = TaskDir(b.task_root / job.id)
    await asyncio.to_thread(taskdir.prepare, job)
    return await b.submit(job, SubmitContext(attempt=1, taskdir=taskdir))


async def final(b: SlurmBackend, nid: str, patience: float = 60) -> BackendStatus:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        status = (await b.poll([nid])).get(nid)
        assert status is not None
        if status.state in FINAL:
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(f"{nid} not final: {status}")


def slurm_knows(cluster: SlurmCluster, nid: str) -> bool:
    res = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", nid, "-o", "%i"],
        capture_output=True,
        text=True,
        env=cluster.env,
    )
    return res.returncode == 0 and nid in res.stdout


async def test_a_job_submitted_just_before_a_crash_is_found_by_name(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    first = backend(slurm_cluster, tmp_path)
    job = make_job("sleep 2; echo adopted")
    nid = await submitted(first, job)
    never = make_job("echo never submitted")
    await asyncio.to_thread(TaskDir(first.task_root / never.id).prepare, never)
    await first.close()

    # The gateway died before it recorded the id: the job is INITIALIZING, no native id.
    again = backend(slurm_cluster, tmp_path)
    adopted = await again.reattach(
        [record(job, State.INITIALIZING), record(never, State.INITIALIZING)]
    )
    assert adopted == {job.id: nid}
    status = await final(again, nid)
    assert status.state == State.COMPLETE
    assert status.executor_logs[0].stdout == "adopted\n"
    assert again.submit_calls == 0


async def test_results_survive_slurm_forgetting_the_job(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    b = backend(slurm_cluster, tmp_path)
    ok, bad = make_job("echo kept"), make_job("echo no >&2; exit 7")
    ids = [await submitted(b, ok), await submitted(b, bad)]
    for nid in ids:
        await final(b, nid)
    deadline = time.monotonic() + 180
    while any(slurm_knows(slurm_cluster, nid) for nid in ids):
        assert time.monotonic() < deadline, "Slurm never purged the finished jobs"
        await asyncio.sleep(1)

    fresh = backend(slurm_cluster, tmp_path)
    recs = [record(ok, State.RUNNING, ids[0]), record(bad, State.RUNNING, ids[1])]
    assert await fresh.reattach(recs) == {ok.id: ids[0], bad.id: ids[1]}
    statuses = await fresh.poll(ids)
    assert statuses[ids[0]].state == State.COMPLETE
    assert statuses[ids[0]].executor_logs[0].stdout == "kept\n"
    assert statuses[ids[1]].state == State.EXECUTOR_ERROR
    assert statuses[ids[1]].executor_logs[0].exit_code == 7
    assert statuses[ids[1]].executor_logs[0].stderr == "no\n"


async def test_a_job_slurm_does_not_know_and_left_no_result_is_a_system_error(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    b = backend(slurm_cluster, tmp_path)
    job = make_job("true")
    assert await b.reattach([record(job, State.RUNNING, "987654")]) == {job.id: "987654"}
    status = (await b.poll(["987654"]))["987654"]
    assert status.state == State.SYSTEM_ERROR
    assert status.detail is not None and "Slurm no longer knows job 987654" in status.detail
    assert status.system_logs == [status.detail]


async def test_alike_jobs_share_an_array_whose_files_go_when_settled(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    b = backend(slurm_cluster, tmp_path)
    b.config = replace(b.config, array_window=0.2)
    jobs = [make_job(f"echo element {i}") for i in range(3)]
    ids = await asyncio.gather(*(submitted(b, j) for j in jobs))
    assert b.submit_calls == 1
    assert len({nid.split("_")[0] for nid in ids}) == 1
    assert sorted(nid.split("_")[1] for nid in ids) == ["0", "1", "2"]
    statuses = [await final(b, nid) for nid in ids]
    assert [s.executor_logs[0].stdout for s in statuses] == [f"element {i}\n" for i in range(3)]
    (array_dir,) = list(b.arrays_dir.iterdir())
    for nid in ids:
        b.forget(nid)
    await asyncio.sleep(0.5)
    assert not array_dir.exists()


async def test_a_batch_job_that_never_ran_the_task_says_why(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    b = backend(slurm_cluster, tmp_path)
    b.config = replace(b.config, python="/nonexistent/python3")
    nid = await submitted(b, make_job("true"))
    status = await final(b, nid)
    assert status.state == State.SYSTEM_ERROR
    assert status.detail is not None and "FAILED" in status.detail
    notes = " ".join(status.system_logs)
    assert "batch job output" in notes and "/nonexistent/python3" in notes, notes


async def test_a_lost_sbatch_reply_is_found_by_name_not_submitted_again(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A frozen controller: sbatch says "Socket timed out" although the request may have
    reached it. The backend pauses submissions, then looks for the job by name before it
    retries, so the job exists once."""
    b = backend(slurm_cluster, tmp_path)
    job = make_job("echo once")
    pid = int((slurm_cluster.base / "slurmctld.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        pending = asyncio.ensure_future(submitted(b, job))
        await asyncio.sleep(8)  # MessageTimeout=5: sbatch has given up by now
        assert not pending.done()
    finally:
        os.kill(pid, signal.SIGCONT)
    nid = await asyncio.wait_for(pending, 120)
    status = await final(b, nid)
    assert status.state == State.COMPLETE
    res = await b.commands.run("squeue", ["-h", "-t", "all", "--name", f"jg-{job.id}", "-o", "%i"])
    assert res.stdout.split() == [nid]


async def test_token_bucket_limits_the_rate_and_pauses() -> None:
    bucket = TokenBucket(rate=20, burst=2)
    t0 = time.monotonic()
    for _ in range(6):
        await bucket.take()
    # Two at once, then four at 20/s.
    assert 0.18 <= time.monotonic() - t0 < 1.0
    bucket.pause(0.4)
    t1 = time.monotonic()
    await bucket.take()
    assert time.monotonic() - t1 >= 0.4
