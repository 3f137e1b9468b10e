"""Helpers shared by the test files: task and job builders, waiting, TES shape checks, clients.

Plain functions over real HTTP (``httpx``) or py-tes; no fixtures live here (they are in the
conftest files), so any test module may import from it.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import random
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest
import tes
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

if TYPE_CHECKING:
    from tests.conftest import Server

Task = dict[str, Any]
"""A TES task as the API answers it (FULL view unless said otherwise)."""
Job = dict[str, Any]
"""A native job as ``/api/v1/jobs/{id}`` answers it."""

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}

requires_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap is not installed (make test installs it when run as root)",
)


def uid() -> str:
    """A short unique name part, so tests on a shared server only see their own things."""
    return uuid.uuid4().hex[:12]


def wait_until(check: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class _Threads(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _QuietThreads(_Threads):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer (a killed gateway, a timed-out request)


@contextmanager
def serve_http(
    handler: Callable[..., http.server.BaseHTTPRequestHandler], *, quiet_errors: bool = False
) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 in a thread; yields the base URL. ``quiet_errors``:
    no traceback when a client drops its connection."""
    httpd = (_QuietThreads if quiet_errors else _Threads)(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def tes_client(server: Server, timeout: float = 60) -> Iterator[httpx.Client]:
    """An HTTP client on the server's TES base URL."""
    with httpx.Client(base_url=server.url + "/ga4gh/tes/v1", timeout=timeout) as client:
        yield client


@contextmanager
def api_client(server: Server, timeout: float = 120) -> Iterator[httpx.Client]:
    """An HTTP client on the server's native API base URL (``/api/v1``)."""
    with httpx.Client(base_url=server.url + "/api/v1", timeout=timeout) as client:
        yield client


# -- processes on this machine (every test backend runs its tasks here) -----------------


def sleep_marker() -> str:
    """A ``sleep`` argument no other process on the machine has in its command line."""
    return f"300.{random.randrange(10**8):08d}"


def procs_with(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def wait_procs(marker: str, present: bool, timeout: float = 15) -> None:
    """Wait until processes with ``marker`` are running (``present``) or all gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bool(procs_with(marker)) == present:
            return
        time.sleep(0.05)
    state = "appeared" if present else "died"
    raise AssertionError(f"processes with {marker!r} never {state}: {procs_with(marker)}")


def wait_procs_gone_now(marker: str, grace: float = 2.0) -> None:
    """The processes are gone at once (reaping may lag the kill by a moment)."""
    deadline = time.monotonic() + grace
    while procs_with(marker):
        assert time.monotonic() < deadline, f"still alive: {procs_with(marker)}"
        time.sleep(0.05)


# -- TES tasks ---------------------------------------------------------------------------


def sh(script: str, image: str = "alpine", **extra: Any) -> dict[str, Any]:
    """A TES executor running ``script`` with ``sh -c``; ``extra`` are executor fields."""
    return {"image": image, "command": ["sh", "-c", script], **extra}


def sh_task(script: str, **resources: Any) -> Task:
    """A one-executor TES task running ``script``, with ``resources`` when given."""
    task: Task = {"executors": [sh(script)]}
    if resources:
        task["resources"] = resources
    return task


def create(tes: httpx.Client, task: Task) -> str:
    """POST the task; the answer is exactly ``{"id": <non-empty string>}``."""
    r = tes.post("/tasks", json=task)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id"}, body
    assert isinstance(body["id"], str) and body["id"]
    return str(body["id"])


def wait_state(tes: httpx.Client, task_id: str, states: set[str], timeout: float = 30) -> Task:
    """Poll a task until it is in one of ``states``; return its FULL view."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: Task = tes.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
        if task["state"] in states:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {states}: {task}")


def wait_final(tes: httpx.Client, task_id: str, timeout: float = 30) -> Task:
    """Poll a task until it is in a terminal state; return its FULL view."""
    return wait_state(tes, task_id, TERMINAL, timeout)


def run(tes: httpx.Client, task: Task, timeout: float = 60) -> Task:
    """Create the task, wait until it is final; its FULL view, checked against the spec."""
    final = wait_final(tes, create(tes, task), timeout)
    assert_tes_shape(final)
    return final


def exit_codes(task: Task) -> list[int]:
    """Exit codes of the executors that ran in the last attempt."""
    return [e["exit_code"] for e in task["logs"][-1]["logs"]]


def stdouts(task: Task) -> list[str]:
    return [e.get("stdout", "") for e in task["logs"][-1]["logs"]]


def stderrs(task: Task) -> list[str]:
    return [e.get("stderr", "") for e in task["logs"][-1]["logs"]]


def system_logs(task: Task) -> str:
    """Every attempt's system_logs lines, one string."""
    return "\n".join(line for tl in task.get("logs", []) for line in tl.get("system_logs", []))


# -- TES document shape (tes-v1.1.openapi.yaml: nothing but the spec's properties) ---------

TASK_FIELDS = {
    "id",
    "state",
    "name",
    "description",
    "inputs",
    "outputs",
    "resources",
    "executors",
    "volumes",
    "tags",
    "logs",
    "creation_time",
}
INPUT_FIELDS = {"name", "description", "url", "path", "type", "content", "streamable"}
OUTPUT_FIELDS = {"name", "description", "url", "path", "path_prefix", "type"}
RESOURCES_FIELDS = {
    "cpu_cores",
    "preemptible",
    "ram_gb",
    "disk_gb",
    "zones",
    "backend_parameters",
    "backend_parameters_strict",
}
EXECUTOR_FIELDS = {
    "image",
    "command",
    "workdir",
    "stdin",
    "stdout",
    "stderr",
    "env",
    "ignore_error",
}
TASK_LOG_FIELDS = {"logs", "metadata", "start_time", "end_time", "outputs", "system_logs"}
EXECUTOR_LOG_FIELDS = {"start_time", "end_time", "stdout", "stderr", "exit_code"}
OUTPUT_LOG_FIELDS = {"url", "path", "size_bytes"}
STATES = {
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "CANCELING",
    "PREEMPTED",
}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def assert_rfc3339(value: Any) -> datetime:
    assert isinstance(value, str) and RFC3339.match(value), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    return parsed


def assert_tes_shape(task: Task) -> None:
    """Only spec fields, with the spec's types, at every level of a tesTask."""
    assert set(task) <= TASK_FIELDS, set(task) - TASK_FIELDS
    assert isinstance(task["id"], str) and task["state"] in STATES
    if "creation_time" in task:
        assert_rfc3339(task["creation_time"])
    for inp in task.get("inputs", []):
        assert set(inp) <= INPUT_FIELDS, inp
    for out in task.get("outputs", []):
        assert set(out) <= OUTPUT_FIELDS, out
    assert set(task.get("resources", {})) <= RESOURCES_FIELDS, task["resources"]
    for ex in task.get("executors", []):
        assert set(ex) <= EXECUTOR_FIELDS, ex
    for tlog in task.get("logs", []):
        assert set(tlog) <= TASK_LOG_FIELDS, tlog
        assert isinstance(tlog["logs"], list) and isinstance(tlog["outputs"], list)
        for key in ("start_time", "end_time"):
            if key in tlog:
                assert_rfc3339(tlog[key])
        for k, v in (tlog.get("metadata") or {}).items():
            assert isinstance(k, str) and isinstance(v, str), (k, v)
        for line in tlog.get("system_logs", []):
            assert isinstance(line, str)
        for elog in tlog["logs"]:
            assert set(elog) <= EXECUTOR_LOG_FIELDS, elog
            code = elog["exit_code"]
            assert isinstance(code, int) and not isinstance(code, bool), elog
            for key in ("start_time", "end_time"):
                if key in elog:
                    assert_rfc3339(elog[key])
        for olog in tlog["outputs"]:
            assert set(olog) == OUTPUT_LOG_FIELDS, olog
            assert isinstance(olog["size_bytes"], str) and olog["size_bytes"].isdigit(), olog


def assert_error(r: httpx.Response, status: int, where: str | None = None) -> dict[str, Any]:
    """The one error shape, ``{code, status, message[, errors[{where, what}]]}``, of
    ``status``; with ``where``, an invalid request with one of its errors located there."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert isinstance(body.get("code"), str) and body["code"]
    assert body.get("status") == status
    assert isinstance(body.get("message"), str) and body["message"]
    for err in body.get("errors", []):
        assert set(err) == {"where", "what"}, err
        assert isinstance(err["where"], str) and isinstance(err["what"], str) and err["what"]
    if where is not None:
        assert body["code"] == "invalid_request"
        assert body["errors"], body
        assert where in [e["where"] for e in body["errors"]], body
    return body


# -- native jobs -------------------------------------------------------------------------


def post_job(api: httpx.Client, **job: Any) -> Job:
    """POST /jobs (on an ``api_client``); the created job (201)."""
    r = api.post("/jobs", json=job)
    assert r.status_code == 201, r.text
    body: Job = r.json()
    return body


def submit_job(api: httpx.Client, **job: Any) -> str:
    """POST /jobs; the new job's id."""
    return str(post_job(api, **job)["id"])


def get_job(api: httpx.Client, job_id: str) -> Job:
    r = api.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    body: Job = r.json()
    return body


def wait_job(
    api: httpx.Client, job_id: str, states: set[str] = TERMINAL, timeout: float = 30
) -> Job:
    """Poll a native job until it is in one of ``states`` (by default: final)."""
    deadline = time.monotonic() + timeout
    job = get_job(api, job_id)
    while job["state"] not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached {states}: {job}")
        time.sleep(0.05)
        job = get_job(api, job_id)
    return job


def run_job(api: httpx.Client, **job: Any) -> Job:
    """Submit a native job and wait for its final state; returns the job."""
    return wait_job(api, submit_job(api, **job))


# -- py-tes ------------------------------------------------------------------------------


def pytes_sh(script: str, image: str = "alpine", **fields: Any) -> tes.Executor:
    """A py-tes executor running ``script`` with ``sh -c``."""
    return tes.Executor(image=image, command=["sh", "-c", script], **fields)


def pytes_final(client: tes.HTTPClient, task_id: str, timeout: float = 60) -> tes.Task:
    """Poll (faster than ``client.wait``) until the task is final; return its FULL view."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get_task(task_id, view="MINIMAL").state in TERMINAL:
            return client.get_task(task_id, view="FULL")
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} not final: {client.get_task(task_id, view='FULL')}")


def pytes_run(client: tes.HTTPClient, task: tes.Task, timeout: float = 60) -> tes.Task:
    """Create ``task`` through py-tes and wait until it is final; its FULL view."""
    return pytes_final(client, client.create_task(task), timeout)


# -- databases ---------------------------------------------------------------------------


@contextmanager
def fresh_postgres(prefix: str = "jg") -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server (dropped afterwards): its URL.
    Skips the test when PostgreSQL is not reachable."""
    url = os.environ.get("JOBGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")

    async def admin(sql: str) -> None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(sql))
        await engine.dispose()

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))
