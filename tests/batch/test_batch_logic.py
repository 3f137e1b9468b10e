"""The batch base's logic and the Slurm backend's command handling, against fake Slurm
commands (``fakesched.py``): lost sbatch replies never submit twice, refusals are
transient or not as Slurm means them, squeue's answers become statuses (and a silent
controller changes nothing), job arrays, reattach after a crash; and the whole gateway
(real store and dispatcher) through the same fake commands. No cluster, no root."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobgate.backends.base import BackendStatus, SubmitContext, SubmitError
from jobgate.backends.batch.scheduler import QueueEntry
from jobgate.backends.slurm import SlurmBackend, SlurmConfig
from jobgate.backends.slurm.backend import slurm_commands
from jobgate.domain.models import Job, JobRecord, new_job_id
from jobgate.domain.states import State
from jobgate.runner.nodefiles import (
    NODE_FILE,
    RESULT_FILE,
    STARTED_FILE,
    SUBMISSION_FILE,
    read_json,
    write_json,
)
from jobgate.runner.taskdir import TaskDir
from tests.batch.fakesched import (
    CONTROLLER_DOWN,
    INVALID_PARTITION,
    RATE_TOO_HIGH,
    SOCKET_TIMEOUT,
    FakeSlurm,
)
from tests.dispatcher.conftest import Start


def make_backend(tmp_path: Path, fake: FakeSlurm, **config: Any) -> SlurmBackend:
    b = SlurmBackend(
        SlurmConfig(
            shared_dir=tmp_path / "shared",
            python=sys.executable,
            runtime="process",
            **{"array_window": 0.0, **config},
        )
    )
    b.commands = slurm_commands(bin_dir=fake.bin_dir)
    return b


@pytest.fixture()
async def slurm(tmp_path: Path, fake: FakeSlurm) -> AsyncIterator[SlurmBackend]:
    b = make_backend(tmp_path, fake)
    yield b
    await b.close()


def make_job(script: str = "true", **resources: Any) -> Job:
    return Job.model_validate(
        {
            "id": new_job_id(),
            "creation_time": datetime.now(UTC),
            "executors": [{"image": "x", "command": ["sh", "-c", script]}],
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
        backend="slurm",
        attempt=1,
        native_id=native_id,
    )


async def submitted(b: SlurmBackend, job: Job) -> str:
    taskdir = TaskDir(b.jobs_root / job.id)
    await asyncio.to_thread(taskdir.prepare, job)
    return await b.submit(job, SubmitContext(attempt=1, taskdir=taskdir))


def write_result(
    base: Path, nid: str, state: State, *codes: int, signal: str | None = None
) -> None:
    """What the node runner leaves in a task dir when it ends (its last write)."""
    logs = [{"exit_code": c, "stdout": f"out {i}\n", "stderr": ""} for i, c in enumerate(codes)]
    result = {"native_id": nid, "host": "node7", "partition": "debug", "state": state.value}
    write_json(base / RESULT_FILE, {**result, "executor_logs": logs, "signal": signal})


async def status_of(b: SlurmBackend, nid: str) -> BackendStatus:
    statuses = await b.poll([nid])
    assert nid in statuses, f"{nid} omitted"
    return statuses[nid]


# -- submission: never twice ------------------------------------------------------------


async def test_a_lost_reply_after_which_the_job_exists_is_found_by_name(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    fake.lose_next_reply(SOCKET_TIMEOUT, created=True)
    job = make_job()
    nid = await submitted(slurm, job)
    assert fake.ids_named(f"jg-{job.id}") == [nid]
    assert len(fake.calls("sbatch")) == 1
    assert slurm.submit_calls == 1
    (lookup,) = fake.name_lookups()
    assert lookup[lookup.index("--name") + 1] == f"jg-{job.id}"


async def test_one_empty_answer_after_a_lost_reply_is_not_enough_to_submit_again(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    """The controller may still be handling the request: the first lookup misses it."""
    fake.lose_next_reply(SOCKET_TIMEOUT, created=True, hidden=1)
    job = make_job()
    nid = await submitted(slurm, job)
    assert fake.ids_named(f"jg-{job.id}") == [nid]
    assert len(fake.calls("sbatch")) == 1
    assert len(fake.name_lookups()) == 2


async def test_a_lost_reply_after_which_the_job_does_not_exist_is_transient(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    fake.lose_next_reply(SOCKET_TIMEOUT, created=False)
    job = make_job()
    with pytest.raises(SubmitError) as err:
        await submitted(slurm, job)
    assert err.value.transient  # the dispatcher submits it again later
    assert SOCKET_TIMEOUT in str(err.value)
    assert len(fake.calls("sbatch")) == 1  # no blind second sbatch
    assert len(fake.name_lookups()) == 2  # twice empty, a moment apart
    assert fake.jobs() == {}


async def test_an_unreachable_controller_is_transient_at_once(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    fake.down()
    t0 = time.monotonic()
    with pytest.raises(SubmitError) as err:
        await submitted(slurm, make_job())
    assert err.value.transient
    assert str(err.value) == f"Slurm: Batch job submission failed: {CONTROLLER_DOWN}"
    assert time.monotonic() - t0 < 0.9  # no lookup pause: nothing can exist
    assert fake.calls("squeue") == []
    assert fake.jobs() == {}


async def test_a_refusal_is_not_transient_and_says_what_slurm_said(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    with pytest.raises(SubmitError) as err:
        await submitted(slurm, make_job(backend_parameters={"partition": "nosuch"}))
    assert not err.value.transient
    assert str(err.value) == (
        f"Slurm refused the job: Batch job submission failed: {INVALID_PARTITION}"
    )
    (argv,) = fake.calls("sbatch")
    assert "--partition=nosuch" in argv
    assert fake.calls("squeue") == []


async def test_submission_rate_too_high_is_transient_and_pauses_the_token_bucket(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    fake.refuse_next(RATE_TOO_HIGH)
    with pytest.raises(SubmitError) as err:
        await submitted(slurm, make_job())
    assert err.value.transient
    assert RATE_TOO_HIGH in str(err.value)
    # The next submission waits for the pause (2 s) although the bucket has tokens.
    t0 = time.monotonic()
    nid = await submitted(slurm, make_job())
    assert time.monotonic() - t0 >= 1.8
    assert list(fake.jobs()) == [nid]
    assert len(fake.calls("sbatch")) == 2


async def test_a_single_job_is_submitted_with_its_name_directory_and_task_dir(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    job = make_job(cpu_cores=2)
    nid = await submitted(slurm, job)
    (argv,) = fake.calls("sbatch")
    base = slurm.jobs_root / job.id
    assert "--parsable" in argv and "--cpus-per-task=2" in argv
    assert f"--job-name=jg-{job.id}" in argv and f"--chdir={base}" in argv
    assert argv[-1] == str(base)  # the shared script takes the task dir as $1
    assert not any(a.startswith("--array") for a in argv)
    node = read_json(base / NODE_FILE)
    assert node is not None and node["task"]["id"] == job.id and node["runtime"] == "process"
    assert "job" not in node  # plain JSON the node runner reads without pydantic
    assert fake.jobs()[nid]["name"] == f"jg-{job.id}"


# -- status ----------------------------------------------------------------------------------


async def test_pending_with_a_reason_is_queued_then_running(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    nid = await submitted(slurm, make_job())
    fake.set(nid, "PENDING", "Priority")
    st = await status_of(slurm, nid)
    assert st.state == State.QUEUED
    assert st.detail == "pending in the Slurm queue; Slurm: PENDING (Priority)"
    assert st.metadata["slurm_job_id"] == nid and st.metadata["slurm_state"] == "PENDING"
    fake.set(nid, "PENDING", "None")
    assert (await status_of(slurm, nid)).detail == "pending in the Slurm queue; Slurm: PENDING"
    fake.set(nid, "RUNNING")
    st = await status_of(slurm, nid)
    assert st.state == State.RUNNING
    assert st.detail == "running on a Slurm node; Slurm: RUNNING"


async def test_a_silent_controller_repeats_the_last_state_never_a_final_one(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    queued, running = await submitted(slurm, make_job()), await submitted(slurm, make_job())
    fake.set(running, "RUNNING")
    first = await slurm.poll([queued, running])
    assert [first[queued].state, first[running].state] == [State.QUEUED, State.RUNNING]
    fake.down()
    for _ in range(2):
        again = await slurm.poll([queued, running])
        assert again[queued].state == State.QUEUED
        assert again[running].state == State.RUNNING
        assert again[running].detail == "Slurm is not answering"
    fake.up()
    fake.set(queued, "RUNNING")
    assert (await status_of(slurm, queued)).state == State.RUNNING


async def test_a_job_gone_from_squeue_with_a_clean_result_has_that_result(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    ok, bad = make_job(), make_job()
    ids = [await submitted(slurm, ok), await submitted(slurm, bad)]
    write_result(slurm.jobs_root / ok.id, ids[0], State.COMPLETE, 0)
    write_result(slurm.jobs_root / bad.id, ids[1], State.EXECUTOR_ERROR, 0, 3)
    for nid in ids:
        fake.purge(nid)
    asked = len(fake.calls("squeue"))
    statuses = await slurm.poll(ids)
    assert len(fake.calls("squeue")) == asked  # a clean result decides alone
    done, failed = statuses[ids[0]], statuses[ids[1]]
    assert done.state == State.COMPLETE
    assert [e.exit_code for e in done.executor_logs] == [0]
    assert done.executor_logs[0].stdout == "out 0\n"
    assert done.metadata["node"] == "node7" and done.metadata["slurm_partition"] == "debug"
    assert failed.state == State.EXECUTOR_ERROR
    assert [e.exit_code for e in failed.executor_logs] == [0, 3]


async def test_a_job_that_ends_between_reading_results_and_asking_has_its_result(
    slurm: SlurmBackend, fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner writes its result, then the batch job ends: a poll that read the task
    # dir just before and asks the scheduler just after must not call it "no result".
    job = make_job()
    nid = await submitted(slurm, job)
    ask = slurm.query

    async def ends_meanwhile(ids: Sequence[str]) -> dict[str, QueueEntry] | None:
        write_result(slurm.jobs_root / job.id, nid, State.COMPLETE, 0)
        fake.set(nid, "COMPLETED")
        return await ask(ids)

    monkeypatch.setattr(slurm, "query", ends_meanwhile)
    st = await status_of(slurm, nid)
    assert st.state == State.COMPLETE, st.detail
    assert [e.stdout for e in st.executor_logs] == ["out 0\n"]


async def test_a_result_of_an_earlier_batch_job_is_not_this_ones(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    job = make_job()
    nid = await submitted(slurm, job)
    write_result(slurm.jobs_root / job.id, "1", State.COMPLETE, 0)
    assert (await status_of(slurm, nid)).state == State.QUEUED


async def test_a_job_gone_without_a_result_is_a_system_error_saying_so(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    nid = await submitted(slurm, make_job())
    fake.purge(nid)
    st = await status_of(slurm, nid)
    assert st.state == State.SYSTEM_ERROR
    assert st.detail is not None
    assert f"Slurm no longer knows job {nid} and it left no result" in st.detail
    assert st.system_logs == [st.detail]


async def test_a_job_gone_after_a_signal_is_a_system_error_naming_it(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    job = make_job()
    nid = await submitted(slurm, job)
    write_result(slurm.jobs_root / job.id, nid, State.CANCELED, 143, signal="SIGTERM")
    fake.purge(nid)
    st = await status_of(slurm, nid)
    assert st.state == State.SYSTEM_ERROR
    assert st.detail is not None and "stopped by SIGTERM" in st.detail
    assert [e.exit_code for e in st.executor_logs] == [143]


async def test_cancelled_is_canceled_and_timeout_an_executor_error_with_the_reason(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    canceled, timed_out = make_job(), make_job()
    ids = [await submitted(slurm, canceled), await submitted(slurm, timed_out)]
    await slurm.cancel(ids[0])
    assert fake.calls("scancel") == [[ids[0]]]
    assert fake.jobs()[ids[0]]["state"] == "CANCELLED"
    # The node runner killed by the time limit leaves a result naming the signal.
    write_result(slurm.jobs_root / timed_out.id, ids[1], State.CANCELED, 143, signal="SIGTERM")
    fake.set(ids[1], "TIMEOUT", "TimeLimit")
    statuses = await slurm.poll(ids)
    assert statuses[ids[0]].state == State.CANCELED
    assert statuses[ids[0]].detail == "the task was canceled in Slurm (Slurm: CANCELLED)"
    st = statuses[ids[1]]
    assert st.state == State.EXECUTOR_ERROR
    assert st.detail == "the task exceeded its Slurm time limit (Slurm: TIMEOUT (TimeLimit))"
    assert st.detail in st.system_logs
    assert [e.exit_code for e in st.executor_logs] == [143]


async def test_an_id_slurm_and_the_backend_do_not_know_is_omitted(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    assert await slurm.poll(["4711"]) == {}


async def test_a_real_node_run_completes_with_the_tasks_output(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    job = make_job("echo from the node; exit 4")
    nid = await submitted(slurm, job)
    assert await asyncio.to_thread(fake.run, nid) == 4
    started = read_json(slurm.jobs_root / job.id / STARTED_FILE)
    assert started is not None and started["native_id"] == nid
    st = await status_of(slurm, nid)
    assert st.state == State.EXECUTOR_ERROR
    assert st.executor_logs[0].exit_code == 4
    assert st.executor_logs[0].stdout == "from the node\n"


# -- arrays ------------------------------------------------------------------------------------


async def test_alike_submissions_share_one_array_whose_list_names_their_task_dirs(
    tmp_path: Path, fake: FakeSlurm
) -> None:
    b = make_backend(tmp_path, fake, array_window=0.3)
    try:
        jobs = [make_job(f"echo element {i}") for i in range(3)]
        ids = await asyncio.gather(*(submitted(b, j) for j in jobs))
        (argv,) = fake.calls("sbatch")
        assert "--array=0-2" in argv
        array = ids[0].split("_")[0]
        assert sorted(ids) == [f"{array}_{i}" for i in range(3)]
        (list_dir,) = b.arrays_dir.iterdir()
        lines = (list_dir / "taskdirs").read_text().splitlines()
        assert sorted(lines) == sorted(str(b.jobs_root / j.id) for j in jobs)
        for j, nid in zip(jobs, ids, strict=True):
            index = int(nid.split("_")[1])
            assert lines[index] == str(b.jobs_root / j.id)
            sub = read_json(b.jobs_root / j.id / SUBMISSION_FILE)
            assert sub == {"name": f"jg-array-{list_dir.name}", "index": index}
        # Each element runs the task dir of its line (the real node runner, --list).
        await asyncio.to_thread(fake.run, ids[2])
        st = await status_of(b, ids[2])
        assert st.state == State.COMPLETE and st.executor_logs[0].stdout == "element 2\n"
    finally:
        await b.close()


async def test_a_lost_reply_for_an_array_finds_the_array_by_name(
    tmp_path: Path, fake: FakeSlurm
) -> None:
    b = make_backend(tmp_path, fake, array_window=0.3)
    try:
        fake.lose_next_reply(SOCKET_TIMEOUT, created=True)
        ids = await asyncio.gather(*(submitted(b, make_job()) for _ in range(2)))
        assert sorted(ids) == sorted(fake.jobs()) == ["1000_0", "1000_1"]
        assert len(fake.calls("sbatch")) == 1
        (lookup,) = fake.name_lookups()
        assert lookup[lookup.index("--name") + 1].startswith("jg-array-")
    finally:
        await b.close()


async def test_submissions_with_different_options_are_submitted_apart(
    tmp_path: Path, fake: FakeSlurm
) -> None:
    b = make_backend(tmp_path, fake, array_window=0.3)
    try:
        jobs = [make_job(), make_job(cpu_cores=2), make_job()]
        ids = await asyncio.gather(*(submitted(b, j) for j in jobs))
        calls = fake.calls("sbatch")
        assert len(calls) == 2
        arrays = [a for argv in calls for a in argv if a.startswith("--array")]
        assert arrays == ["--array=0-1"]
        (single,) = [argv for argv in calls if "--cpus-per-task=2" in argv]
        assert f"--job-name=jg-{jobs[1].id}" in single
        assert "_" not in ids[1] and ids[0].split("_")[0] == ids[2].split("_")[0]
    finally:
        await b.close()


# -- reattach after a crash ------------------------------------------------------------------


async def test_reattach_finds_array_elements_and_single_jobs_by_name(
    tmp_path: Path, fake: FakeSlurm
) -> None:
    first = make_backend(tmp_path, fake, array_window=0.3)
    arrayed = [make_job(), make_job()]
    single = make_job(cpu_cores=3)
    ids = await asyncio.gather(*(submitted(first, j) for j in [*arrayed, single]))
    await first.close()
    assert not (first.jobs_root / single.id / SUBMISSION_FILE).exists()  # node.json only

    # The gateway died before it recorded the ids: the jobs are INITIALIZING.
    again = make_backend(tmp_path, fake)
    try:
        recs = [record(j, State.INITIALIZING) for j in [*arrayed, single]]
        adopted = await again.reattach(recs)
        assert adopted == {arrayed[0].id: ids[0], arrayed[1].id: ids[1], single.id: ids[2]}
        assert again.submit_calls == 0 and len(fake.calls("sbatch")) == 2
        fake.set(ids[1], "RUNNING")
        assert (await status_of(again, ids[1])).state == State.RUNNING
    finally:
        await again.close()


async def test_reattach_uses_the_started_id_when_squeue_no_longer_lists_the_job(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    job = make_job()
    base = slurm.jobs_root / job.id
    base.mkdir(parents=True)
    write_json(base / NODE_FILE, {"job": {}})
    write_json(base / STARTED_FILE, {"native_id": "321", "host": "node7"})
    write_result(base, "321", State.COMPLETE, 0)
    assert await slurm.reattach([record(job, State.INITIALIZING)]) == {job.id: "321"}
    assert len(fake.name_lookups()) == 1
    assert (await status_of(slurm, "321")).state == State.COMPLETE


async def test_reattach_prefers_the_live_id_and_skips_jobs_never_submitted(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    listed, never, recorded = make_job(), make_job(), make_job()
    base = slurm.jobs_root / listed.id
    base.mkdir(parents=True)
    write_json(base / NODE_FILE, {"job": {}})
    write_json(base / STARTED_FILE, {"native_id": "1"})  # an earlier run's
    fake.add("555", f"jg-{listed.id}")
    # Staged but not handed to Slurm: a task dir without node.json.
    (slurm.jobs_root / never.id / "root").mkdir(parents=True)
    adopted = await slurm.reattach(
        [
            record(listed, State.INITIALIZING),
            record(never, State.INITIALIZING),
            record(recorded, State.QUEUED, "777"),
        ]
    )
    assert adopted == {listed.id: "555", recorded.id: "777"}


async def test_after_reattach_a_silent_controller_keeps_the_recorded_state(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    """A restarted gateway has seen nothing yet: what the store recorded stands."""
    running, queued = make_job(), make_job()
    recs = [record(running, State.RUNNING, "41"), record(queued, State.QUEUED, "42")]
    assert await slurm.reattach(recs) == {running.id: "41", queued.id: "42"}
    fake.down()
    statuses = await slurm.poll(["41", "42"])
    assert statuses["41"].state == State.RUNNING
    assert statuses["42"].state == State.QUEUED


async def test_jobs_reattach_could_not_look_up_are_looked_up_before_a_new_submit(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    waiting, started = make_job(), make_job()
    for job in (waiting, started):
        (slurm.jobs_root / job.id).mkdir(parents=True)
        write_json(slurm.jobs_root / job.id / NODE_FILE, {"job": {}})
    fake.add("500", f"jg-{waiting.id}", "PENDING")
    fake.add("501", f"jg-{started.id}", "RUNNING")
    fake.down()
    recs = [record(waiting, State.INITIALIZING), record(started, State.INITIALIZING)]
    assert await slurm.reattach(recs) == {}
    # The dispatcher queues them again; while Slurm is silent, they wait.
    with pytest.raises(SubmitError) as err:
        await submitted(slurm, waiting)
    assert err.value.transient
    fake.up()
    assert await submitted(slurm, waiting) == "500"  # still queued: it runs the new task dir
    fresh = await submitted(slurm, started)  # it ran in a task dir staged anew: canceled
    assert fresh not in ("500", "501")
    assert fake.jobs()["501"]["state"] == "CANCELLED"
    assert fake.jobs()["500"]["state"] == "PENDING"
    assert len(fake.calls("sbatch")) == 1


async def test_reattach_of_jobs_never_submitted_asks_slurm_nothing(
    slurm: SlurmBackend, fake: FakeSlurm
) -> None:
    never = make_job()
    (slurm.jobs_root / never.id / "root").mkdir(parents=True)
    assert await slurm.reattach([record(never, State.INITIALIZING)]) == {}
    assert fake.calls("squeue") == []


# -- the whole gateway -----------------------------------------------------------------------


async def test_a_job_through_the_gateway_queued_with_squeues_reason_then_runs(
    gateway: Start, tmp_path: Path, fake: FakeSlurm
) -> None:
    b = make_backend(tmp_path, fake)
    gw = await gateway({"slurm": b})
    job = await gw.submit(executors=[{"image": "x", "command": ["echo", "hello"]}])
    detail = "pending in the Slurm queue; Slurm: PENDING (Priority)"
    rec = await gw.until(job, lambda r: r.detail == detail)
    assert rec.state == State.QUEUED and rec.native_id is not None
    nid = rec.native_id
    fake.set(nid, "RUNNING")
    await gw.until(job, lambda r: r.state == State.RUNNING)
    await asyncio.to_thread(fake.run, nid)
    rec = await gw.final(job)
    assert rec.state == State.COMPLETE, rec.detail
    assert rec.logs is not None and rec.logs[-1]["logs"][0]["stdout"] == "hello\n"
    assert rec.logs[-1]["metadata"]["slurm_job_id"] == nid
    assert await gw.states(job) == [
        State.QUEUED,
        State.INITIALIZING,
        State.QUEUED,
        State.RUNNING,
        State.COMPLETE,
    ]
    assert len(fake.calls("sbatch")) == 1


async def test_a_controller_outage_at_submission_keeps_the_job_queued_then_it_runs(
    gateway: Start, tmp_path: Path, fake: FakeSlurm
) -> None:
    b = make_backend(tmp_path, fake)
    gw = await gateway({"slurm": b})
    fake.down(seconds=1.5)
    job = await gw.submit()
    rec = await gw.until(job, lambda r: r.waiting_since is not None)
    assert rec.state == State.QUEUED and rec.native_id is None
    assert rec.detail is not None
    assert rec.detail.startswith(
        f"waiting for backend slurm: Slurm: Batch job submission failed: {CONTROLLER_DOWN}; "
    )
    rec = await gw.until(job, lambda r: r.native_id is not None, within=5)
    assert rec.state == State.QUEUED and rec.waiting_since is None
    nid = rec.native_id
    assert nid is not None
    write_result(b.jobs_root / job, nid, State.COMPLETE, 0)
    fake.set(nid, "COMPLETED")
    rec = await gw.final(job)
    assert rec.state == State.COMPLETE, rec.detail
    assert rec.attempt == 1
    assert len(fake.jobs()) == 1
    outcomes = [c["ok"] for c in fake.state()["calls"] if c["cmd"] == "sbatch"]
    assert outcomes[0] is False and outcomes.count(True) == 1  # refused while down, then once


async def test_a_controller_outage_while_jobs_wait_or_run_fails_none(
    gateway: Start, tmp_path: Path, fake: FakeSlurm
) -> None:
    b = make_backend(tmp_path, fake)
    gw = await gateway({"slurm": b})
    waiting, running = await gw.submit(), await gw.submit()
    recs = [await gw.until(j, lambda r: r.native_id is not None) for j in (waiting, running)]
    nids = [r.native_id or "" for r in recs]
    fake.set(nids[1], "RUNNING")
    await gw.until(running, lambda r: r.state == State.RUNNING)
    submitted = len(fake.calls("sbatch"))  # one array or two jobs, as they came
    fake.down()
    await gw.until(waiting, lambda r: r.detail == "Slurm is not answering")
    await asyncio.sleep(1.0)  # a few polls of a silent controller
    assert (await gw.get(waiting)).state == State.QUEUED
    assert (await gw.get(running)).state == State.RUNNING
    fake.up()
    for job, nid in zip((waiting, running), nids, strict=True):
        write_result(b.jobs_root / job, nid, State.COMPLETE, 0)
        fake.set(nid, "COMPLETED")
    for job in (waiting, running):
        assert (await gw.final(job)).state == State.COMPLETE
    assert len(fake.calls("sbatch")) == submitted  # nothing submitted again
    # No SYSTEM_ERROR, no resubmission; the waiting job ended between two polls, so it
    # passes through RUNNING (a job never completes without having run).
    ran = [State.QUEUED, State.INITIALIZING, State.QUEUED, State.RUNNING, State.COMPLETE]
    assert await gw.states(waiting) == ran
    assert await gw.states(running) == ran


async def test_a_restart_while_the_controller_is_down_never_runs_a_job_twice(
    gateway: Start, tmp_path: Path, fake: FakeSlurm
) -> None:
    """The gateway died after sbatch answered, before it recorded the id, and comes back
    while the controller is down: reattach cannot look the job up, so the job is looked
    up again before it is submitted anew; the one Slurm holds runs, no second one."""
    gw = await gateway({"slurm": make_backend(tmp_path, fake)})
    job = await gw.submit()
    old = (await gw.until(job, lambda r: r.native_id is not None)).native_id
    await gw.dispatcher.stop()
    await gw.store.transition(job, State.QUEUED, State.INITIALIZING, native_id=None)
    fake.down(seconds=1.0)
    b = make_backend(tmp_path, fake)
    gw = await gateway({"slurm": b})
    rec = await gw.until(job, lambda r: r.native_id is not None, within=5)
    assert rec.native_id == old and rec.state == State.QUEUED
    assert list(fake.jobs()) == [old] and len(fake.calls("sbatch")) == 1
    write_result(b.jobs_root / job, old, State.COMPLETE, 0)
    fake.set(old, "COMPLETED")
    assert (await gw.final(job)).state == State.COMPLETE
