"""`jobgate serve --workers 2 --dispatchers 2` on SQLite and on PostgreSQL: API workers
and dispatchers are separate processes that share only the database.

The poll interval is 30 s here, so a job that runs at once, or a cancel that lands at
once, shows that the wake-ups across processes work; event streams served by the API
workers show the state changes the dispatchers make.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.support import fresh_postgres

FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


class Multi:
    def __init__(self, root: Path, db_url: str | None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "JOBGATE_AUTH": "none",
            "JOBGATE_POLL_INTERVAL": "30",
            "JOBGATE_SLOTS": "4",
        }
        if db_url:
            env["JOBGATE_DATABASE_URL"] = db_url
        self.log_path = root / "serve.log"
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "jobgate", "serve", "--workers", "2"),
                *("--dispatchers", "2", "--port", str(self.port)),
                *("--data-dir", str(root / "data"), "--log-level", "warning"),
            ],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        # Both dispatchers registered: each holds a lease row.
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait(self, task_id: str, states: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.http.get(f"/ga4gh/tes/v1/tasks/{task_id}").json()["state"]
            if state in states:
                return state
            time.sleep(0.1)
        return state

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def multi(request: pytest.FixtureRequest) -> Iterator[Multi]:
    root = Path(tempfile.mkdtemp(prefix="jobgate-multi-"))
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_postgres("jgmulti")) if request.param != "sqlite" else None
        m = Multi(root, url)
        yield m
        m.stop()
        assert m.proc.returncode == 0, m.log()


def _task(*command: str) -> dict[str, object]:
    return {"executors": [{"image": "busybox", "command": list(command)}]}


def test_jobs_submitted_to_an_api_worker_run_at_once_in_a_dispatcher(multi: Multi) -> None:
    ids = [
        multi.http.post("/ga4gh/tes/v1/tasks", json=_task("true")).json()["id"] for _ in range(10)
    ]
    # Well within the 30 s poll: only a wake-up from the API worker starts them.
    states = [multi.wait(i, FINAL, 20) for i in ids]
    assert states == ["COMPLETE"] * 10, multi.log()


def test_a_cancel_sent_to_an_api_worker_stops_the_job_in_its_dispatcher(multi: Multi) -> None:
    task_id = multi.http.post("/ga4gh/tes/v1/tasks", json=_task("sleep", "120")).json()["id"]
    assert multi.wait(task_id, {"RUNNING"}, 20) == "RUNNING", multi.log()
    assert multi.http.post(f"/ga4gh/tes/v1/tasks/{task_id}:cancel").status_code == 200
    assert multi.wait(task_id, FINAL, 15) == "CANCELED", multi.log()


def test_every_api_worker_streams_the_state_changes_dispatchers_make(multi: Multi) -> None:
    # A new connection each time: the kernel spreads them over both workers.
    for _ in range(4):
        task_id = multi.http.post("/ga4gh/tes/v1/tasks", json=_task("true")).json()["id"]
        seen = []
        with httpx.stream(
            "GET", f"{multi.url}/api/v1/jobs/{task_id}/events/stream", timeout=30
        ) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:])["state"])
                    if seen[-1] in FINAL:
                        break
        assert seen[0] == "QUEUED"
        assert seen[-1] == "COMPLETE"
        assert "RUNNING" in seen
