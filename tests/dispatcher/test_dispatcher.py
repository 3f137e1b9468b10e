"""The dispatcher against the backend contract, with a scriptable fake backend: QUEUED
at the backend with its reason, transient refusals waited out with backoff, patience,
cancel races, restarts, push updates, backends that stage data themselves."""

from __future__ import annotations

import asyncio

from jobgate.domain.states import State
from tests.dispatcher.conftest import Start
from tests.dispatcher.fake import FakeBackend, RemoteFake


async def test_a_job_in_the_backends_queue_is_queued_with_its_reason_then_runs(
    gateway: Start, fake: FakeBackend
) -> None:
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    rec = await gw.until(job, lambda r: r.native_id is not None and r.state == State.QUEUED)
    nid = fake.native_of(job)
    assert rec.native_id == nid
    fake.move(nid, State.QUEUED, "Fake: PENDING (Priority)")
    rec = await gw.until(job, lambda r: r.detail == "Fake: PENDING (Priority)")
    assert rec.state == State.QUEUED
    fake.move(nid, State.RUNNING, "Fake: RUNNING")
    await gw.until(job, lambda r: r.state == State.RUNNING)
    fake.move(nid, State.COMPLETE)
    rec = await gw.final(job)
    assert rec.state == State.COMPLETE
    assert await gw.states(job) == [
        State.QUEUED,
        State.INITIALIZING,
        State.QUEUED,
        State.RUNNING,
        State.COMPLETE,
    ]
    assert fake.calls.submits == [job]  # submitted once, however often it was polled


async def test_transient_refusals_are_retried_with_backoff_then_the_job_runs(
    gateway: Start, fake: FakeBackend
) -> None:
    fake.autorun = True
    fake.refuse(2, "Unable to contact the controller")
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    rec = await gw.until(job, lambda r: r.state == State.QUEUED and r.waiting_since is not None)
    assert rec.detail is not None
    assert rec.detail.startswith("waiting for backend fake: Unable to contact the controller")
    assert "next try in" in rec.detail
    assert rec.native_id is None
    rec = await gw.final(job, within=20)
    assert rec.state == State.COMPLETE, rec.detail
    assert fake.calls.submits == [job, job, job]
    # The retries are not attempts: the one run is attempt 1, with one task log.
    assert rec.attempt == 1
    assert rec.logs is not None and len(rec.logs) == 1
    assert rec.logs[0]["metadata"]["attempt"] == "1"
    assert rec.waiting_since is None


async def test_a_backend_that_stays_unreachable_fails_the_job_after_its_patience(
    gateway: Start, fake: FakeBackend
) -> None:
    fake.submit_patience = 1.5
    fake.refuse(100, "connection refused")
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    rec = await gw.final(job, within=20)
    assert rec.state == State.SYSTEM_ERROR
    assert rec.detail == "connection refused"
    assert rec.logs is not None
    assert "backend refused the task: connection refused" in rec.logs[-1]["system_logs"]
    assert 2 <= len(fake.calls.submits) <= 5


async def test_a_refusal_that_is_not_transient_fails_the_job_at_once(
    gateway: Start, fake: FakeBackend
) -> None:
    fake.refuse(1, "invalid partition", transient=False)
    gw = await gateway({"fake": fake})
    rec = await gw.final(await gw.submit())
    assert rec.state == State.SYSTEM_ERROR
    assert rec.detail == "invalid partition"
    assert len(fake.calls.submits) == 1


async def test_cancel_of_a_job_in_the_backends_queue_stops_it_there(
    gateway: Start, fake: FakeBackend
) -> None:
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    await gw.until(job, lambda r: r.native_id is not None)
    assert await gw.jobs.cancel(job) == State.CANCELING
    rec = await gw.final(job)
    assert rec.state == State.CANCELED
    assert fake.calls.cancels == [fake.native_of(job)]


async def test_cancel_while_waiting_out_a_refusal_never_submits_again(
    gateway: Start, fake: FakeBackend
) -> None:
    fake.refuse(1)
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    await gw.until(job, lambda r: r.waiting_since is not None)
    assert await gw.jobs.cancel(job) == State.CANCELED
    await asyncio.sleep(2)  # past the retry delay
    assert fake.calls.submits == [job]
    assert (await gw.get(job)).state == State.CANCELED


async def test_a_job_the_backend_lost_is_a_system_error(gateway: Start, fake: FakeBackend) -> None:
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    await gw.until(job, lambda r: r.native_id is not None)
    fake.lose(fake.native_of(job))
    rec = await gw.final(job)
    assert rec.state == State.SYSTEM_ERROR
    assert rec.logs is not None
    assert any("no longer knows" in line for line in rec.logs[-1]["system_logs"])


async def test_after_a_restart_queued_jobs_at_the_backend_are_adopted_not_resubmitted(
    gateway: Start, fake: FakeBackend
) -> None:
    gw = await gateway({"fake": fake})
    kept, lost = await gw.submit(), await gw.submit()
    for job in (kept, lost):
        await gw.until(job, lambda r: r.native_id is not None)
    fake.jobs.pop(fake.native_of(lost))  # the backend forgot it while the gateway was down
    gw = await gateway({"fake": fake})  # restart on the same database and backend
    fake.move(fake.native_of(kept), State.COMPLETE)
    assert (await gw.final(kept)).state == State.COMPLETE
    # The lost one runs again, as a second attempt.
    rec = await gw.until(lost, lambda r: r.attempt == 2 and r.native_id is not None)
    assert fake.calls.submits.count(kept) == 1
    assert fake.calls.submits.count(lost) == 2
    fake.move(rec.native_id or "", State.COMPLETE)
    assert (await gw.final(lost)).state == State.COMPLETE


async def test_pushed_updates_decide_without_a_poll(gateway: Start) -> None:
    fake = FakeBackend(push=True)
    gw = await gateway({"fake": fake}, dispatch={"poll_interval": 60})
    job = await gw.submit()
    await gw.until(job, lambda r: r.native_id is not None)
    nid = fake.native_of(job)
    polls = fake.calls.polls
    fake.push(nid, State.RUNNING, "started (pushed)")
    rec = await gw.until(job, lambda r: r.state == State.RUNNING)
    assert rec.detail == "started (pushed)"
    fake.push(nid, State.COMPLETE)
    assert (await gw.final(job)).state == State.COMPLETE
    assert fake.calls.polls <= polls + 1


async def test_a_backend_that_stages_data_itself_gets_the_urls_not_a_task_dir(
    gateway: Start,
) -> None:
    remote = RemoteFake("remote", autorun=True)
    gw = await gateway({"remote": remote})
    job = await gw.submit(
        inputs=[{"path": "/in/a", "url": "https://data.example.org/a"}],
        outputs=[{"path": "/out/b", "url": "s3://bucket/b"}],
    )
    rec = await gw.final(job)
    assert rec.state == State.COMPLETE
    entry = remote.jobs[remote.native_of(job)]
    assert entry.ctx.taskdir is None
    assert entry.job.inputs is not None and entry.job.inputs[0].url == "https://data.example.org/a"
    # The gateway neither fetched the input nor made a task directory.
    assert not (gw.settings.jobs_dir / job).exists()


async def test_backends_that_act_for_the_submitter_get_its_credential(gateway: Start) -> None:
    fake = FakeBackend(autorun=True)
    fake.wants_credential = True
    seen: list[str] = []

    async def credentials(job_id: str) -> str | None:
        seen.append(job_id)
        return f"token-of-{job_id}"

    gw = await gateway({"fake": fake}, credentials=credentials)
    job = await gw.submit()
    assert (await gw.final(job)).state == State.COMPLETE
    assert fake.jobs[fake.native_of(job)].ctx.credential == f"token-of-{job}"
    assert "token-of" not in repr(fake.jobs[fake.native_of(job)].ctx)
    assert seen == [job]


async def test_a_job_seen_only_once_it_ended_is_recorded_as_having_run(
    gateway: Start, fake: FakeBackend
) -> None:
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    await gw.until(job, lambda r: r.native_id is not None)
    fake.move(fake.native_of(job), State.EXECUTOR_ERROR, exit_code=3)
    rec = await gw.final(job)
    assert rec.state == State.EXECUTOR_ERROR
    assert rec.detail == "executor 0 exited with code 3"
    assert (await gw.states(job))[-3:] == [State.QUEUED, State.RUNNING, State.EXECUTOR_ERROR]


async def test_a_job_the_backend_stages_is_initializing_until_it_queues_or_runs(
    gateway: Start, fake: FakeBackend
) -> None:
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    await gw.until(job, lambda r: r.native_id is not None)
    nid = fake.native_of(job)
    fake.move(nid, State.INITIALIZING, "Fake: staging inputs")
    rec = await gw.until(job, lambda r: r.state == State.INITIALIZING)
    assert rec.detail == "Fake: staging inputs" and rec.native_id == nid
    fake.move(nid, State.QUEUED, "Fake: queued")
    await gw.until(job, lambda r: r.state == State.QUEUED)
    fake.move(nid, State.RUNNING)
    await gw.until(job, lambda r: r.state == State.RUNNING)
    fake.move(nid, State.INITIALIZING, "Fake: late word")  # never back once it ran
    await gw.until(job, lambda r: r.detail == "Fake: late word")
    assert (await gw.get(job)).state == State.RUNNING
    fake.move(nid, State.COMPLETE)
    assert (await gw.final(job)).state == State.COMPLETE
    assert await gw.states(job) == [
        State.QUEUED,
        State.INITIALIZING,
        State.QUEUED,
        State.INITIALIZING,
        State.QUEUED,
        State.RUNNING,
        State.COMPLETE,
    ]


async def test_a_job_that_ends_while_the_backend_stages_it_is_recorded_as_having_run(
    gateway: Start, fake: FakeBackend
) -> None:
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    await gw.until(job, lambda r: r.native_id is not None)
    nid = fake.native_of(job)
    fake.move(nid, State.INITIALIZING)
    await gw.until(job, lambda r: r.state == State.INITIALIZING and r.native_id is not None)
    fake.move(nid, State.COMPLETE)
    assert (await gw.final(job)).state == State.COMPLETE
    assert (await gw.states(job))[-3:] == [State.INITIALIZING, State.RUNNING, State.COMPLETE]


async def test_after_a_restart_a_job_the_backend_stages_is_adopted_not_resubmitted(
    gateway: Start, fake: FakeBackend
) -> None:
    gw = await gateway({"fake": fake})
    job = await gw.submit()
    await gw.until(job, lambda r: r.native_id is not None)
    nid = fake.native_of(job)
    fake.move(nid, State.INITIALIZING, "Fake: staging inputs")
    await gw.until(job, lambda r: r.state == State.INITIALIZING)
    gw = await gateway({"fake": fake})  # restart on the same database and backend
    rec = await gw.get(job)
    assert rec.state == State.INITIALIZING and rec.native_id == nid
    fake.move(nid, State.RUNNING)
    await gw.until(job, lambda r: r.state == State.RUNNING)
    fake.move(nid, State.COMPLETE)
    rec = await gw.final(job)
    assert rec.state == State.COMPLETE
    assert fake.calls.submits == [job]
    assert len(rec.logs or []) == 1  # one attempt, one task log
