"""Crash recovery with a real server process: kill -9, restart on the same data dir.

What a user relies on: every task the server accepted (a 200 on create) reaches a final
state exactly once; a task whose executors the crashed server had started is adopted by
the restarted one, never run twice (tests/test_local_durable.py has the details); tasks
interrupted before that run again (or fail with a reason once they have used up their
attempts); nothing a cleanly stopped server started keeps running.
The database is read directly (sqlite3) to check the event history, not just the API.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import tes

from jobgate.service.jobs import JobService
from jobgate.store.database import make_engine
from jobgate.store.jobs import JobStore
from tests.conftest import Server
from tests.support import TERMINAL, create, serve_http, wait_final, wait_state

FINAL_STATES = tuple(sorted(TERMINAL))


@pytest.fixture()
def marker() -> str:
    """A unique fractional part for ``sleep`` so this test's processes can be found."""
    return str(secrets.randbelow(900_000) + 100_000)


@pytest.fixture()
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; each is stopped at the end, whatever happened."""
    started: list[Server] = []
    yield started
    for srv in started:
        srv.stop()


@pytest.fixture()
def stalled_http() -> Iterator[tuple[str, threading.Event]]:
    """An HTTP file that is only served once the event is set: a task fetching it stays
    INITIALIZING (staging its input) until then."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(60)
            body = b"staged after restart\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    # Quiet: the crashed server's connection is gone.
    with serve_http(Handler, quiet_errors=True) as base:
        yield f"{base}/input.txt", release
        release.set()


def sleeper(name: str, seconds: int, marker: str, *, then: str = "") -> dict[str, Any]:
    script = f"sleep {seconds}.{marker}" + (f"; echo {then}" if then else "")
    return {"name": name, "executors": [{"image": "alpine", "command": ["sh", "-c", script]}]}


def echo(name: str, text: str) -> dict[str, Any]:
    return {"name": name, "executors": [{"image": "alpine", "command": ["echo", text]}]}


def marked_processes(marker: str) -> dict[int, float]:
    """pid → create time of live (non-zombie) processes whose command line has ``marker``."""
    found = {}
    for p in psutil.process_iter(["pid", "cmdline", "create_time", "status"]):
        info = p.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(marker in arg for arg in info["cmdline"] or []):
            found[info["pid"]] = info["create_time"]
    return found


def wait_for_processes(marker: str, count: int, timeout: float = 10) -> dict[int, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = marked_processes(marker)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} processes with marker {marker}, saw {found}")


def assert_gone(old: dict[int, float], marker: str, timeout: float = 5) -> None:
    """None of ``old`` (pid, create time) is alive any more."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {pid: t for pid, t in marked_processes(marker).items() if old.get(pid) == t}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not alive, f"processes of the crashed server still run: {alive}"


def db_query(srv: Server, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    con = sqlite3.connect(srv.data_dir / "jobgate.db", timeout=30)
    try:
        con.row_factory = sqlite3.Row
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def events(srv: Server, job_id: str) -> list[tuple[str | None, str, str, str | None]]:
    rows = db_query(
        srv,
        "SELECT from_state, to_state, source, detail FROM job_events WHERE job_id = ? ORDER BY seq",
        (job_id,),
    )
    return [(r["from_state"], r["to_state"], r["source"], r["detail"]) for r in rows]


def job_row(srv: Server, job_id: str) -> dict[str, Any]:
    rows = db_query(srv, "SELECT state, attempt, logs FROM jobs WHERE id = ?", (job_id,))
    assert len(rows) == 1, f"task {job_id} is not in the database"
    row = dict(rows[0])
    row["logs"] = json.loads(row["logs"]) if row["logs"] else []
    return row


def assert_one_final_event(srv: Server, job_id: str, expected: str) -> None:
    finals = [e for e in events(srv, job_id) if e[1] in FINAL_STATES]
    assert [e[1] for e in finals] == [expected], (
        f"task {job_id}: events into a final state: {finals}\n{srv.log()[-3000:]}"
    )


def transitions(srv: Server, job_id: str) -> list[tuple[str | None, str]]:
    return [(e[0], e[1]) for e in events(srv, job_id)]


def cancel_via_service(srv: Server, job_id: str) -> str:
    """Cancel through jobgate's own service layer on the shared database, as another API
    process of the same deployment would while the dispatcher's process is down."""

    async def run() -> str:
        engine = make_engine(f"sqlite+aiosqlite:///{srv.data_dir / 'jobgate.db'}")
        try:
            jobs = JobService(
                JobStore(engine),
                backends={"local"},
                default_backend="local",
                max_content_bytes=1 << 20,
            )
            return str(await jobs.cancel(job_id))
        finally:
            await engine.dispose()

    return asyncio.run(run())


RUN_AGAIN = [
    ("QUEUED", "INITIALIZING"),
    ("INITIALIZING", "RUNNING"),
]


def test_kill9_every_accepted_task_finishes_exactly_once(
    tmp_path: Path,
    marker: str,
    servers: list[Server],
    stalled_http: tuple[str, threading.Event],
) -> None:
    srv = Server(tmp_path / "data", {"JOBGATE_SLOTS": "3"}).start()
    servers.append(srv)
    url, release = stalled_http
    with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
        # Two sleepers and one task staging its input take the three slots; the ten behind
        # them stay queued.
        running = [
            create(client, sleeper(f"run-{i}", 3, marker, then=f"done-{i}")) for i in range(2)
        ]
        staging = create(
            client,
            {
                "name": "staging",
                "inputs": [{"url": url, "path": "/in/input.txt"}],
                "executors": [{"image": "alpine", "command": ["cat", "/in/input.txt"]}],
            },
        )
        queued = [
            create(client, sleeper(f"q-{i}", 0, marker, then=f"late-{i}"))
            if i % 2
            else create(client, echo(f"q-{i}", f"quick-{i}"))
            for i in range(10)
        ]
        for job_id in running:
            wait_state(client, job_id, {"RUNNING"}, timeout=15)
        old = wait_for_processes(marker, 2)
        states = {t["id"]: t["state"] for t in client.get("/tasks").json()["tasks"]}
        assert {states[j] for j in running} == {"RUNNING"}
        assert states[staging] == "INITIALIZING"
        assert {states[j] for j in queued} == {"QUEUED"}

        srv.kill9()
        # The running executors outlive the server, and the restarted one adopts them.
        assert set(old.items()) <= set(marked_processes(marker).items())
        srv.start()
        release.set()
        assert_gone(old, marker)

        for job_id in [*running, staging, *queued]:
            task = wait_final(client, job_id, timeout=30)
            assert task["state"] == "COMPLETE", (task, srv.log()[-3000:])

        # An adopted task ran once: one attempt, the executor's own output.
        task = client.get(f"/tasks/{running[0]}", params={"view": "FULL"}).json()
        assert len(task["logs"]) == 1
        assert task["logs"][0]["logs"][0]["stdout"] == "done-0\n"

        # What recovery wrote parses in a strict client too.
        pytes = tes.HTTPClient(srv.url, timeout=30)
        for job_id, attempts in [(running[0], 1), (running[1], 1), (staging, 2)]:
            parsed = pytes.get_task(job_id, view="FULL")
            assert parsed.state == "COMPLETE" and len(parsed.logs) == attempts

    for i, job_id in enumerate(running):
        assert_one_final_event(srv, job_id, "COMPLETE")
        evs = events(srv, job_id)
        assert transitions(srv, job_id) == [
            (None, "QUEUED"),
            *RUN_AGAIN,
            ("RUNNING", "COMPLETE"),
        ], evs
        row = job_row(srv, job_id)
        assert row["state"] == "COMPLETE"
        assert row["attempt"] == 1
        assert len(row["logs"]) == 1
        assert [entry["metadata"]["attempt"] for entry in row["logs"]] == ["1"]
        assert row["logs"][0]["logs"][0]["exit_code"] == 0
        assert row["logs"][0]["logs"][0]["stdout"] == f"done-{i}\n"

    assert_one_final_event(srv, staging, "COMPLETE")
    assert transitions(srv, staging) == [
        (None, "QUEUED"),
        ("QUEUED", "INITIALIZING"),
        ("INITIALIZING", "QUEUED"),
        *RUN_AGAIN,
        ("RUNNING", "COMPLETE"),
    ]
    assert events(srv, staging)[2][2] == "recovery"
    row = job_row(srv, staging)
    assert (row["attempt"], len(row["logs"])) == (2, 2)
    assert row["logs"][1]["logs"][0]["stdout"] == "staged after restart\n"

    for i, job_id in enumerate(queued):
        assert_one_final_event(srv, job_id, "COMPLETE")
        assert transitions(srv, job_id) == [(None, "QUEUED"), *RUN_AGAIN, ("RUNNING", "COMPLETE")]
        assert all(e[2] != "recovery" for e in events(srv, job_id))
        row = job_row(srv, job_id)
        assert row["attempt"] == 1
        assert len(row["logs"]) == 1
        expected = f"late-{i}\n" if i % 2 else f"quick-{i}\n"
        assert row["logs"][0]["logs"][0]["stdout"] == expected

    # Nothing else was created, nothing was lost.
    ids = {r["id"] for r in db_query(srv, "SELECT id FROM jobs")}
    assert ids == {*running, staging, *queued}


def test_kill9_gives_up_after_max_attempts_and_settles_canceling(
    tmp_path: Path,
    marker: str,
    servers: list[Server],
    stalled_http: tuple[str, threading.Event],
) -> None:
    srv = Server(tmp_path / "data", {"JOBGATE_SLOTS": "2", "JOBGATE_MAX_ATTEMPTS": "1"}).start()
    servers.append(srv)
    assert srv.proc is not None
    url, _ = stalled_http
    with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
        # Interrupted while staging its input: nothing of it runs yet, so it is run again,
        # here not, as it has used up its one attempt.
        interrupted = create(
            client,
            {
                "name": "interrupted",
                "inputs": [{"url": url, "path": "/in/input.txt"}],
                "executors": [{"image": "alpine", "command": ["cat", "/in/input.txt"]}],
            },
        )
        canceling = create(client, sleeper("canceling", 30, marker))
        waiting = create(client, echo("waiting", "still ran"))
        wait_state(client, interrupted, {"INITIALIZING"}, timeout=15)
        wait_state(client, canceling, {"RUNNING"}, timeout=15)
        old = wait_for_processes(marker, 1)

        # Freeze the server, cancel from another process of the deployment (the cancel is
        # committed: CANCELING), then crash the server before it could act on it.
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            assert cancel_via_service(srv, canceling) == "CANCELING"
        finally:
            srv.kill9()
        assert job_row(srv, canceling)["state"] == "CANCELING"

        srv.start()
        assert_gone(old, marker)

        failed = wait_final(client, interrupted)
        assert failed["state"] == "SYSTEM_ERROR"
        reason = " ".join(failed["logs"][-1]["system_logs"])
        assert "interrupted" in reason, failed
        assert wait_final(client, canceling)["state"] == "CANCELED"
        done = wait_final(client, waiting)
        assert done["state"] == "COMPLETE"
        assert done["logs"][0]["logs"][0]["stdout"] == "still ran\n"

        pytes = tes.HTTPClient(srv.url, timeout=30)
        assert pytes.get_task(interrupted, view="FULL").logs[-1].system_logs
        assert pytes.get_task(canceling, view="FULL").state == "CANCELED"

    assert_one_final_event(srv, interrupted, "SYSTEM_ERROR")
    last = events(srv, interrupted)[-1]
    assert last[:3] == ("INITIALIZING", "SYSTEM_ERROR", "recovery")
    assert last[3] and "giving up" in last[3]
    assert job_row(srv, interrupted)["attempt"] == 1  # never run a second time

    # Adopted, then canceled by the restarted server (its executor killed).
    assert_one_final_event(srv, canceling, "CANCELED")
    assert events(srv, canceling)[-1][:2] == ("CANCELING", "CANCELED")

    assert_one_final_event(srv, waiting, "COMPLETE")


def test_sigterm_restart_keeps_tasks_and_their_data(
    tmp_path: Path, marker: str, servers: list[Server]
) -> None:
    srv = Server(tmp_path / "data", {"JOBGATE_SLOTS": "2"}).start()
    servers.append(srv)
    assert srv.proc is not None
    with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
        finished = [
            create(
                client,
                {
                    "name": "ok",
                    "description": "kept across restarts",
                    "tags": {"project": "p1"},
                    "inputs": [{"path": "/data/in.txt", "content": "hello\n"}],
                    "executors": [{"image": "alpine", "command": ["cat", "/data/in.txt"]}],
                },
            ),
            create(
                client,
                {"name": "fails", "executors": [{"image": "a", "command": ["sh", "-c", "exit 4"]}]},
            ),
        ]
        for job_id in finished:
            wait_final(client, job_id)
        long = create(client, sleeper("long", 1, marker, then="after restart"))
        wait_state(client, long, {"RUNNING"})
        old = wait_for_processes(marker, 1)
        before = {j: client.get(f"/tasks/{j}", params={"view": "FULL"}).json() for j in finished}
        listed = client.get("/tasks", params={"view": "BASIC"}).json()

        t0 = time.monotonic()
        srv.stop()
        # uvicorn re-raises SIGTERM after its graceful shutdown; -9 would mean it hung.
        assert srv.proc.returncode in (0, -signal.SIGTERM), srv.log()[-3000:]
        assert time.monotonic() - t0 < 8, "SIGTERM did not stop the server promptly"
        assert_gone(old, marker, timeout=2)  # a clean stop kills what it ran

        srv.start()
        after = {j: client.get(f"/tasks/{j}", params={"view": "FULL"}).json() for j in finished}
        assert after == before
        assert before[finished[0]]["logs"][0]["logs"][0]["stdout"] == "hello\n"
        assert before[finished[1]]["state"] == "EXECUTOR_ERROR"
        relisted = client.get("/tasks", params={"view": "BASIC"}).json()
        assert [t["id"] for t in relisted["tasks"]] == [t["id"] for t in listed["tasks"]]

        # The task the stop interrupted runs again and completes.
        task = wait_final(client, long)
        assert task["state"] == "COMPLETE", task
        assert len(task["logs"]) == 2
        assert task["logs"][1]["logs"][0]["stdout"] == "after restart\n"
    assert_one_final_event(srv, long, "COMPLETE")


def test_starting_a_second_server_leaves_the_first_ones_tasks_alone(
    tmp_path: Path, marker: str, servers: list[Server]
) -> None:
    first = Server(tmp_path / "a", {"JOBGATE_SLOTS": "1"}).start()
    servers.append(first)
    with httpx.Client(base_url=first.url + "/ga4gh/tes/v1", timeout=30) as client:
        job_id = create(client, sleeper("busy", 1, marker, then="undisturbed"))
        wait_state(client, job_id, {"RUNNING"})
        wait_for_processes(marker, 1)
        # Start-up cleans up after crashed servers; a live one on the same host is not crashed.
        servers.append(Server(tmp_path / "b", {"JOBGATE_SLOTS": "1"}).start())
        task = wait_final(client, job_id)
        assert task["state"] == "COMPLETE", task
        assert task["logs"][0]["logs"][0]["stdout"] == "undisturbed\n"


def test_sigterm_under_load_stops_promptly_and_loses_nothing(
    tmp_path: Path, servers: list[Server]
) -> None:
    """A server busy submitting, running and finishing tasks stops on SIGTERM within
    seconds, each time; what it acknowledged runs to one final state across the restarts."""
    # The process runtime: what is under test is the gateway's own loops, not sandboxes.
    env = {"JOBGATE_SLOTS": "8", "JOBGATE_POLL_INTERVAL": "0.05", "JOBGATE_RUNTIME": "process"}
    srv = Server(tmp_path / "data", env)
    servers.append(srv)
    task = {"executors": [{"image": "alpine", "command": ["true"]}]}
    accepted: list[str] = []

    def flood(stop: threading.Event) -> None:
        with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/tasks", json=task)
                except httpx.HTTPError:
                    return  # the server is stopping: nothing more was acknowledged
                if r.status_code == 200:
                    accepted.append(r.json()["id"])

    for _ in range(2):
        srv.start()
        stop = threading.Event()
        threads = [threading.Thread(target=flood, args=(stop,)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1)
        assert srv.proc is not None
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(15)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            log = srv.log()[-3000:]
            raise AssertionError(f"SIGTERM under load did not stop the server: {log}") from None
        assert srv.proc.returncode in (0, -signal.SIGTERM), srv.log()[-3000:]
        assert time.monotonic() - t0 < 10, "SIGTERM under load took too long"
        stop.set()
        for t in threads:
            t.join()

    srv.start()
    assert len(accepted) > 20, "the flood submitted almost nothing"
    with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
        for job_id in accepted:
            assert wait_final(client, job_id, timeout=60)["state"] == "COMPLETE"
    stored = {r["id"] for r in db_query(srv, "SELECT id FROM jobs")}
    # A create whose answer the stop cut off may be stored too; none acknowledged is lost.
    assert set(accepted) <= stored
    for job_id in stored:
        assert_one_final_event(srv, job_id, "COMPLETE")
