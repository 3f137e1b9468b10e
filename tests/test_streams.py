"""Live views through a real server: job events as SSE, executors' output (logs).

The server's heartbeat is short (0.5 s) so idle streams show their keep-alive comments.
Scripts ``cd "${JOBGATE_TASK_ROOT:-/}"`` first, so relative paths mean container paths
under both runtimes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobgate.domain.models import new_job_id
from jobgate.domain.states import State
from jobgate.service.events import EventBus
from jobgate.service.feed import follow_events
from jobgate.store.database import make_engine, migrate
from jobgate.store.jobs import JobStore, NewJob
from tests.conftest import Server
from tests.support import TERMINAL, submit_job, wait_job

CD = 'cd "${JOBGATE_TASK_ROOT:-/}" && '


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's server (a short SSE heartbeat), in place of the session's: the ``api`` and
    ``tes`` fixtures use it."""
    srv = Server(
        tmp_path_factory.mktemp("streams") / "data", {"JOBGATE_SSE_HEARTBEAT": "0.5"}
    ).start()
    yield srv
    srv.stop()


def history(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.get(f"/jobs/{job_id}/events").json()["events"]
    return events


def messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """SSE messages as dicts (``id``, ``event``, parsed ``data``); comments as ``{"comment"}``."""
    msg: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if msg:
                if "data" in msg:
                    msg["data"] = json.loads(msg["data"])
                yield msg
                msg = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            msg[field] = value.removeprefix(" ")


def read_stream(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """All events of a stream that ends by itself, and how many comments came."""
    events, comments = [], 0
    with client.stream("GET", url, headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for m in messages(r):
            if "comment" in m:
                comments += 1
            else:
                events.append(m)
    return events, comments


def check_messages(events: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [e["data"] for e in events] == expected
    assert [int(e["id"]) for e in events] == [x["seq"] for x in expected]
    assert {e["event"] for e in events} == {"state"}


# -- events -----------------------------------------------------------------------------


def test_job_stream_delivers_every_transition_then_ends(api: httpx.Client) -> None:
    job_id = submit_job(api, script="sleep 0.5; echo done")
    events, _ = read_stream(api, f"/jobs/{job_id}/events/stream")
    states = [e["data"]["state"] for e in events]
    assert states == ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"]
    # The stream ended at the final state: the history holds nothing more.
    check_messages(events, history(api, job_id))


def test_job_stream_replays_then_continues_live(api: httpx.Client) -> None:
    job_id = submit_job(api, script="echo held", hold=True)
    seen: list[dict[str, Any]] = []
    comments = 0
    with api.stream("GET", f"/jobs/{job_id}/events/stream") as r:
        for m in messages(r):
            if "comment" in m:
                comments += 1
                if comments == 3:  # replay done, two idle heartbeats later: start the job
                    assert [e["data"]["state"] for e in seen] == ["PAUSED"]
                    assert api.post(f"/jobs/{job_id}/start").status_code == 200
            else:
                seen.append(m)
    assert [e["data"]["state"] for e in seen] == [
        "PAUSED",
        "QUEUED",
        "INITIALIZING",
        "RUNNING",
        "COMPLETE",
    ]
    check_messages(seen, history(api, job_id))


def test_all_jobs_stream_delivers_every_transition_in_order(api: httpx.Client) -> None:
    ids: list[str] = []
    got: dict[str, list[dict[str, Any]]] = {}
    order: list[int] = []
    with api.stream("GET", "/events/stream") as r:
        for m in messages(r):
            if "comment" in m:
                if not ids:  # the first comment: subscribed, nothing is missed from now on
                    ids = [submit_job(api, script="echo a"), submit_job(api, script="exit 3")]
                    got = {i: [] for i in ids}
                continue
            order.append(int(m["id"]))
            if m["data"]["job_id"] in got:
                got[m["data"]["job_id"]].append(m)
            if all(evs and evs[-1]["data"]["state"] in TERMINAL for evs in got.values()):
                break
    assert order == sorted(order) and len(set(order)) == len(order)
    for job_id, events in got.items():
        check_messages(events, history(api, job_id))
    assert got[ids[1]][-1]["data"]["state"] == "EXECUTOR_ERROR"


def test_resume_with_last_event_id_gives_exactly_the_missed_events(api: httpx.Client) -> None:
    job_id = submit_job(api, script="true")
    wait_job(api, job_id)
    full = history(api, job_id)
    assert len(full) == 4
    # Per-job stream: the header, or ?after=, resumes after that seq; then it ends.
    events, _ = read_stream(
        api, f"/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(full[1]["seq"])}
    )
    check_messages(events, full[2:])
    events, _ = read_stream(api, f"/jobs/{job_id}/events/stream?after={full[0]['seq']}")
    check_messages(events, full[1:])
    # The header wins over ?after= (a browser reconnects with the original URL).
    events, _ = read_stream(
        api,
        f"/jobs/{job_id}/events/stream?after=0",
        headers={"Last-Event-ID": str(full[2]["seq"])},
    )
    check_messages(events, full[3:])
    # Resumed after the final state: nothing missed, the stream ends at once.
    events, comments = read_stream(
        api, f"/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(full[-1]["seq"])}
    )
    assert events == [] and comments == 1

    # All-jobs stream: the events after the resume point, this job's among them, in order.
    mine: list[dict[str, Any]] = []
    seqs: list[int] = []
    with api.stream("GET", "/events/stream", headers={"Last-Event-ID": str(full[0]["seq"])}) as r:
        for m in messages(r):
            if "comment" in m:
                continue
            seqs.append(int(m["id"]))
            if m["data"]["job_id"] == job_id:
                mine.append(m)
                if m["data"]["state"] in TERMINAL:
                    break
    assert seqs[0] > full[0]["seq"] and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    check_messages(mine, full[1:])


def test_idle_stream_sends_heartbeats(api: httpx.Client) -> None:
    start = time.monotonic()
    comments = 0
    with api.stream("GET", "/events/stream?after=999999999") as r:
        for m in messages(r):
            if "comment" in m:
                comments += 1
                if comments == 3:
                    break
    # One at once, then one per 0.5 s of idleness.
    assert 0.8 < time.monotonic() - start < 10


def test_event_stream_errors(api: httpx.Client) -> None:
    r = api.get("/jobs/no-such-job/events/stream")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    job_id = submit_job(api, script="true")
    r = api.get(f"/jobs/{job_id}/events/stream", headers={"Last-Event-ID": "x"})
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["message"]
    assert api.get("/events/stream?after=-1").status_code == 400


# -- logs -------------------------------------------------------------------------------


def test_follow_streams_lines_as_they_are_printed(api: httpx.Client) -> None:
    job_id = submit_job(api, script="for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.2; done")
    arrivals: list[tuple[float, str]] = []
    with api.stream("GET", f"/jobs/{job_id}/logs", params={"follow": "true"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        for line in r.iter_lines():
            arrivals.append((time.monotonic(), line))
    ended = time.monotonic()
    assert [line for _, line in arrivals] == [f"line {i}" for i in range(1, 9)]
    # Line by line, not all at the end: ~1.4 s between the first and the last.
    assert arrivals[-1][0] - arrivals[0][0] > 0.8
    # The response ended because the job did.
    assert api.get(f"/jobs/{job_id}").json()["state"] == "COMPLETE"
    assert ended - arrivals[-1][0] < 5


def test_follow_waits_for_a_queued_job(api: httpx.Client) -> None:
    job_id = submit_job(api, script="echo late; echo oops >&2", hold=True)
    with api.stream("GET", f"/jobs/{job_id}/logs?follow=true&stream=stderr") as r:
        api.post(f"/jobs/{job_id}/start")
        body = r.read()
    assert body == b"oops\n"


def test_logs_after_completion_full_and_per_stream(api: httpx.Client, server: Server) -> None:
    job_id = submit_job(
        api,
        executors=[
            {"image": "x", "command": ["sh", "-c", "seq 1 100000; echo e0 >&2"]},
            {"image": "x", "command": ["sh", "-c", "echo second; echo e1 >&2"]},
            {
                "image": "x",
                "command": ["sh", "-c", "echo to-file; echo err-file >&2"],
                "stdout": "/out/o.txt",
                "stderr": "/out/e.txt",
            },
        ],
    )
    job = wait_job(api, job_id)
    assert job["state"] == "COMPLETE"
    full = "".join(f"{i}\n" for i in range(1, 100001))
    # More than the 64 KiB tail kept in the task's logs: the whole output is kept.
    assert len(full) > 64 * 1024
    assert api.get(f"/jobs/{job_id}/logs").text == full
    assert api.get(f"/jobs/{job_id}/logs?follow=true").text == full  # final: just the file
    assert api.get(f"/jobs/{job_id}/logs?stream=stderr").text == "e0\n"
    assert api.get(f"/jobs/{job_id}/logs?executor=1").text == "second\n"
    assert api.get(f"/jobs/{job_id}/logs?executor=1&stream=stderr").text == "e1\n"
    # An executor with its own stdout/stderr files: those are its logs.
    assert api.get(f"/jobs/{job_id}/logs?executor=2").text == "to-file\n"
    assert api.get(f"/jobs/{job_id}/logs?executor=2&stream=stderr").text == "err-file\n"
    kept = server.data_dir / "logs" / job_id
    assert sorted(p.name for p in kept.iterdir()) == [
        f"{i}.{s}" for i in range(3) for s in ("stderr", "stdout")
    ]
    assert not (server.data_dir / "jobs" / job_id).exists()

    # Deleting the job deletes its logs.
    assert api.delete(f"/jobs/{job_id}").status_code == 204
    assert not kept.exists()
    assert api.get(f"/jobs/{job_id}/logs").status_code == 404


def test_logs_of_a_job_that_never_ran_are_empty(api: httpx.Client) -> None:
    job_id = submit_job(api, script="echo x", hold=True)
    r = api.get(f"/jobs/{job_id}/logs")
    assert r.status_code == 200 and r.text == ""


def test_logs_errors(api: httpx.Client, server: Server) -> None:
    r = api.get("/jobs/no-such-job/logs")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    job_id = submit_job(api, script="true")
    r = api.get(f"/jobs/{job_id}/logs?executor=1")
    assert r.status_code == 400 and "no executor 1" in r.json()["message"]
    assert api.get(f"/jobs/{job_id}/logs?stream=stdin").status_code == 400
    assert api.get(f"/jobs/{job_id}/logs?executor=-1").status_code == 400


def test_logs_never_follow_a_symlink_out_of_the_task(api: httpx.Client, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n")
    secret.chmod(0o644)
    # The executor swaps its stdout file for a link to a host file while it runs.
    job_id = submit_job(
        api,
        executors=[
            {
                "image": "x",
                "command": [
                    "sh",
                    "-c",
                    CD + f"rm -f out/o.txt; ln -s {secret} out/o.txt; sleep 1",
                ],
                "stdout": "/out/o.txt",
            }
        ],
    )
    time.sleep(0.5)
    assert "host secret" not in api.get(f"/jobs/{job_id}/logs").text
    wait_job(api, job_id)
    assert "host secret" not in api.get(f"/jobs/{job_id}/logs").text


# -- the feed behind the streams, on a real store and bus ---------------------------------


async def test_feed_falls_back_to_the_store_when_the_bus_overflows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await migrate(engine)
    store = JobStore(engine)
    bus = EventBus()
    store.listeners.append(bus.publish)
    try:
        feed = follow_events(store, bus, after=None, heartbeat=5)
        assert await anext(feed) is None  # subscribed
        # One commit publishes more events than a subscriber's queue holds (10,000).
        spec = {"executors": [{"image": "a", "command": ["true"]}]}
        jobs = [NewJob(id=new_job_id(), spec=spec, backend="local") for _ in range(10_500)]
        await store.create(jobs)
        # ... and some more while the consumer is still behind.
        await store.transition(jobs[0].id, State.QUEUED, State.CANCELED)
        got = []
        while len(got) < 10_501:
            event = await anext(feed)
            assert event is not None
            got.append(event)
        seqs = [e.seq for e in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert [e.job_id for e in got[:10_500]] == [j.id for j in jobs]
        assert (got[-1].job_id, got[-1].to_state) == (jobs[0].id, State.CANCELED)
        # Nothing else: the next item is a heartbeat, not a duplicate.
        bus_task = asyncio.ensure_future(anext(feed))
        await store.transition(jobs[1].id, State.QUEUED, State.CANCELED)
        event = await asyncio.wait_for(bus_task, 5)
        assert event is not None and event.job_id == jobs[1].id
        await feed.aclose()
        assert bus.subscribers == 0
    finally:
        store.close()
        await engine.dispose()
