"""Local runs outlive the gateway: kill -9 a real ``jobgate serve``, restart it on the same
data dir, and the restarted gateway adopts what the dead one started.

What a user relies on: an executor runs once, whatever happens to the gateway process
(a task appending a line to a file appends one); the task's outcome (exit code, log tails)
is the executor's own; one killed while no gateway watched fails with a reason instead of
running again; a task canceled while the gateway was down ends CANCELED.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import Server
from tests.support import create, wait_final, wait_state
from tests.test_recovery import (
    assert_gone,
    assert_one_final_event,
    cancel_via_service,
    job_row,
    marked_processes,
    transitions,
    wait_for_processes,
)

RUNTIMES = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
    ),
    "process",
]
ONCE = [(None, "QUEUED"), ("QUEUED", "INITIALIZING"), ("INITIALIZING", "RUNNING")]


@pytest.fixture()
def shared() -> Iterator[Path]:
    """A host directory every task may write (``JOBGATE_HOST_MOUNTS=<it>:rw``); under
    /var/tmp, as task uids cannot enter pytest's own directories."""
    path = Path(tempfile.mkdtemp(prefix="jobgate-durable-", dir="/var/tmp"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def server(
    request: pytest.FixtureRequest, tmp_path: Path, shared: Path
) -> Iterator[tuple[Server, httpx.Client]]:
    env = {
        "JOBGATE_RUNTIME": request.param,
        "JOBGATE_HOST_MOUNTS": f"{shared}:rw",
        "JOBGATE_POLL_INTERVAL": "0.2",
        # The host's own tree as the image: its /var/tmp is where the host mount shows.
        "JOBGATE_IMAGE_MAP": "*=dir:/",
    }
    srv = Server(tmp_path / "data", env).start()
    try:
        with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
            yield srv, client
    finally:
        srv.stop()


@pytest.fixture()
def marker() -> str:
    return str(int(time.time() * 1000) % 900_000 + 100_000)


def task(*scripts: str) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["sh", "-c", s]} for s in scripts]}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_lines(path: Path, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(lines(path)) < count:
        assert time.monotonic() < deadline, f"{path}: {lines(path)}"
        time.sleep(0.05)


def why(final: dict[str, Any], srv: Server) -> str:
    """What a failed assertion shows: the task's system logs and the server's log."""
    notes = [line for attempt in final.get("logs") or [] for line in attempt["system_logs"] or []]
    return f"{final['state']}: {notes}\n{srv.log()[-2000:]}"


@pytest.mark.parametrize("server", RUNTIMES, indirect=True)
def test_a_task_running_at_a_kill9_completes_once(
    server: tuple[Server, httpx.Client], shared: Path, marker: str
) -> None:
    srv, client = server
    out = shared / "one.txt"
    job_id = create(client, task(f"echo $JOBGATE_JOB_ID >> {out}; sleep 6.{marker}; echo done"))
    wait_lines(out, 1)
    before = wait_for_processes(marker, 1)

    srv.kill9()
    time.sleep(0.5)
    # The executor outlives the gateway: the same processes still run.
    assert set(marked_processes(marker).items()) >= set(before.items())
    srv.start()

    final = wait_final(client, job_id)
    assert final["state"] == "COMPLETE", why(final, srv)
    assert lines(out) == [job_id]
    assert len(final["logs"]) == 1  # one attempt: it was adopted, not run again
    ran = final["logs"][0]["logs"]
    assert [(e["exit_code"], e["stdout"]) for e in ran] == [(0, "done\n")]
    assert transitions(srv, job_id) == [*ONCE, ("RUNNING", "COMPLETE")]
    assert job_row(srv, job_id)["attempt"] == 1
    assert_one_final_event(srv, job_id, "COMPLETE")
    assert_gone(before, marker)


@pytest.mark.parametrize("server", RUNTIMES, indirect=True)
def test_the_next_executor_runs_once_after_a_kill9_during_the_first(
    server: tuple[Server, httpx.Client], shared: Path, marker: str
) -> None:
    srv, client = server
    out = shared / "two.txt"
    job_id = create(
        client,
        task(
            f"echo first-$JOBGATE_JOB_ID >> {out}; sleep 2.{marker}",
            # The adopter starts this one: with the environment the dead gateway gave it.
            f"echo second-$JOBGATE_JOB_ID >> {out}; echo second",
        ),
    )
    wait_lines(out, 1)
    srv.kill9()
    srv.start()
    final = wait_final(client, job_id)
    assert final["state"] == "COMPLETE", why(final, srv)
    assert lines(out) == [f"first-{job_id}", f"second-{job_id}"]
    ran = final["logs"][0]["logs"]
    assert [e["exit_code"] for e in ran] == [0, 0]
    assert ran[1]["stdout"] == "second\n"
    assert transitions(srv, job_id) == [*ONCE, ("RUNNING", "COMPLETE")]


@pytest.mark.parametrize("server", RUNTIMES, indirect=True)
def test_executors_that_ended_while_no_gateway_ran_keep_their_outcome(
    server: tuple[Server, httpx.Client], shared: Path, marker: str
) -> None:
    srv, client = server
    ok = create(client, task(f"sleep 1.{marker}; echo fine; echo noted >&2"))
    failing = create(client, task(f"sleep 1.{marker}; echo partial; exit 3", "echo never"))
    wait_for_processes(marker, 2)
    srv.kill9()
    # Both end while no gateway runs.
    deadline = time.monotonic() + 20
    while marked_processes(marker):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    srv.start()

    done = wait_final(client, ok)
    assert done["state"] == "COMPLETE", why(done, srv)
    [ran] = done["logs"][0]["logs"]
    assert (ran["exit_code"], ran["stdout"], ran["stderr"]) == (0, "fine\n", "noted\n")
    assert ran["start_time"] < ran["end_time"]
    failed = wait_final(client, failing)
    assert failed["state"] == "EXECUTOR_ERROR", failed
    assert [(e["exit_code"], e["stdout"]) for e in failed["logs"][0]["logs"]] == [(3, "partial\n")]
    # The log endpoints have what the dead gateway's executors wrote.
    r = client.get(f"/tasks/{ok}")
    assert r.status_code == 200
    assert_one_final_event(srv, ok, "COMPLETE")
    assert_one_final_event(srv, failing, "EXECUTOR_ERROR")


@pytest.mark.parametrize("server", RUNTIMES, indirect=True)
def test_a_task_canceled_while_the_gateway_was_down_ends_canceled(
    server: tuple[Server, httpx.Client], shared: Path, marker: str
) -> None:
    """Defined behaviour: the restarted gateway adopts the run and carries out the cancel:
    the executor is killed, no further one starts, the task ends CANCELED with the logs
    of what ran."""
    srv, client = server
    out = shared / "canceled.txt"
    job_id = create(
        client, task(f"echo $JOBGATE_JOB_ID >> {out}; sleep 30.{marker}", f"echo late >> {out}")
    )
    wait_lines(out, 1)
    before = wait_for_processes(marker, 1)
    srv.kill9()
    assert cancel_via_service(srv, job_id) == "CANCELING"
    srv.start()
    final = wait_final(client, job_id, timeout=20)
    assert final["state"] == "CANCELED", why(final, srv)
    assert_gone(before, marker)
    assert lines(out) == [job_id]  # neither run again nor continued
    assert_one_final_event(srv, job_id, "CANCELED")


@pytest.mark.parametrize("server", RUNTIMES, indirect=True)
def test_an_executor_killed_while_no_gateway_ran_fails_and_is_not_rerun(
    server: tuple[Server, httpx.Client], shared: Path, marker: str
) -> None:
    srv, client = server
    out = shared / "killed.txt"
    job_id = create(client, task(f"echo $JOBGATE_JOB_ID >> {out}; sleep 30.{marker}"))
    wait_lines(out, 1)
    before = wait_for_processes(marker, 1)
    srv.kill9()
    # An operator kills the task's processes, its wrapper included.
    started = srv.data_dir / "jobs" / job_id / "0.started"
    wrapper = int(started.read_text().split()[0])
    for proc in [psutil.Process(wrapper), *psutil.Process(wrapper).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    assert_gone(before, marker)
    srv.start()

    final = wait_final(client, job_id)
    assert final["state"] == "SYSTEM_ERROR", why(final, srv)
    reason = " ".join(final["logs"][-1]["system_logs"])
    assert "ended without recording its exit status" in reason, reason
    assert "not run again" in reason
    assert len(final["logs"]) == 1
    assert lines(out) == [job_id]
    assert job_row(srv, job_id)["attempt"] == 1
    assert_one_final_event(srv, job_id, "SYSTEM_ERROR")


@pytest.mark.parametrize("server", ["process"], indirect=True)
def test_runs_of_jobs_no_longer_active_are_killed_at_the_restart(
    server: tuple[Server, httpx.Client], shared: Path, marker: str
) -> None:
    srv, client = server
    job_id = create(client, task(f"sleep 30.{marker}"))
    wait_state(client, job_id, {"RUNNING"})
    before = wait_for_processes(marker, 1)
    srv.kill9()
    # Meanwhile the job was settled elsewhere (another process of the deployment).
    import sqlite3

    con = sqlite3.connect(srv.data_dir / "jobgate.db")
    with con:
        con.execute("UPDATE jobs SET state = 'SYSTEM_ERROR' WHERE id = ?", (job_id,))
    con.close()
    srv.start()
    assert_gone(before, marker, timeout=10)
    assert client.get(f"/tasks/{job_id}").json()["state"] == "SYSTEM_ERROR"
