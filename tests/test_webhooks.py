"""Webhooks against a real server and a real HTTP receiver on 127.0.0.1.

The receiver records every request; what it answers depends on the path:
``/ok/<tag>`` 204, ``/flaky/<n>/<tag>`` 503 for the first n requests then 204,
``/busy/<n>/<tag>`` 429 (Retry-After: 0) for the first n, ``/status/<code>/<tag>`` always
<code>, ``/hang/<tag>`` sleeps 5 s, ``/gate/<tag>`` 503 until the test opens the gate,
``/redirect/<tag>`` 302 to ``/ok/<tag>``.

The receiver listens on 127.0.0.1, which the SSRF guard refuses by default: the servers
here allow-list it (JOBGATE_WEBHOOK_ALLOWED_HOSTS), the module's gateway by host and port.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.domain.models import new_job_id
from jobgate.service.events import EventBus
from jobgate.service.webhooks import (
    Cursor,
    RetryPolicy,
    StoredCursor,
    Webhooks,
    load_secret,
    refusal,
    sign,
    verify,
)
from jobgate.staging.guard import Guard
from jobgate.store.database import make_engine, migrate
from jobgate.store.jobs import JobStore, NewJob
from jobgate.store.webhooks import Target, callback_targets, max_event_seq
from tests.conftest import Server
from tests.store.conftest import engine  # noqa: F401 - the SQLite/PostgreSQL fixture
from tests.support import wait_until

SECRET = "test-secret-\u00e9"  # non-ASCII on purpose: the key is the secret's UTF-8 bytes
LIFECYCLE = ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"]


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    """A threaded HTTP server that records requests and answers per path."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.counts: dict[str, int] = {}
        self.gates: set[str] = set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers = receiver.answer(self.path)
                with receiver.lock:
                    receiver.hits.append(Hit(self.path, dict(self.headers), body, status))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a hanging request

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path: str) -> tuple[int, dict[str, str]]:
        parts = path.strip("/").split("/")
        with self.lock:
            n = self.counts[path] = self.counts.get(path, 0) + 1
        kind = parts[0]
        if kind == "flaky" and n <= int(parts[1]):
            return 503, {}
        if kind == "busy" and n <= int(parts[1]):
            return 429, {"Retry-After": "0"}
        if kind == "status":
            return int(parts[1]), {}
        if kind == "hang":
            time.sleep(5)
        if kind == "gate" and path not in self.gates:
            return 503, {}
        if kind == "redirect":
            return 302, {"Location": f"{self.url}/ok/{parts[1]}"}
        return 204, {}

    def delivered(self, path: str) -> list[Hit]:
        """Requests to ``path`` that were answered 2xx, in arrival order."""
        with self.lock:
            return [h for h in self.hits if h.path == path and 200 <= h.status < 300]

    def all(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rcv = Receiver()
    yield rcv
    rcv.close()


ENV = {
    "JOBGATE_WEBHOOK_SECRET": SECRET,
    "JOBGATE_WEBHOOK_BACKOFF": "0.05",
    "JOBGATE_WEBHOOK_BACKOFF_MAX": "0.2",
    "JOBGATE_WEBHOOK_MAX_ATTEMPTS": "5",
    "JOBGATE_WEBHOOK_TIMEOUT": "1",
    "JOBGATE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
}


@pytest.fixture(scope="module")
def gateway_server(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[Server]:
    """Only the receiver's host:port allow-listed: 127.0.0.1 on other ports is refused."""
    env = {**ENV, "JOBGATE_WEBHOOK_ALLOWED_HOSTS": receiver.url.removeprefix("http://")}
    srv = Server(tmp_path_factory.mktemp("webhooks") / "data", env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def gateway(gateway_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_server.url, timeout=30) as client:
        yield client


def submit(client: httpx.Client, callback: str | None, script: str = "echo hi") -> str:
    body: dict[str, Any] = {"name": "hook", "script": script, "labels": {"team": "a"}}
    if callback is not None:
        body["callback"] = callback
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def states(hits: list[Hit]) -> list[str]:
    return [h.event["state"] for h in hits]


def stored_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/api/v1/jobs/{job_id}/events").json()["events"]
    return events


def wait_job(client: httpx.Client, job_id: str, timeout: float = 20) -> float:
    """Wait until the job is COMPLETE; seconds it took."""
    start = time.monotonic()
    wait_until(
        lambda: client.get(f"/api/v1/jobs/{job_id}").json()["state"] == "COMPLETE",
        timeout,
        f"job {job_id} to complete",
    )
    return time.monotonic() - start


# -- through a server ----------------------------------------------------------------------


def test_events_arrive_signed_and_in_order(gateway: httpx.Client, receiver: Receiver) -> None:
    path = f"/ok/{new_job_id()}"
    job_id = submit(gateway, receiver.url + path)
    wait_until(lambda: "COMPLETE" in states(receiver.delivered(path)), what="COMPLETE webhook")
    hits = receiver.delivered(path)
    assert states(hits) == LIFECYCLE
    stored = stored_events(gateway, job_id)
    assert [h.event["event_seq"] for h in hits] == [e["seq"] for e in stored]
    previous = None
    for hit, event in zip(hits, stored, strict=True):
        body = hit.event
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["X-Jobgate-Event-Id"] == str(event["seq"])
        assert hit.headers["X-Jobgate-Delivery-Attempt"] == "1"
        expected = hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
        assert hit.headers["X-Jobgate-Signature-256"] == f"sha256={expected}"
        assert body["job_id"] == job_id
        assert body["previous_state"] == previous
        assert body["detail"] == event["detail"]
        assert body["time"] == event["at"]
        assert datetime.fromisoformat(body["time"]).tzinfo is not None
        assert body["name"] == "hook"
        assert body["labels"] == {"team": "a"}
        previous = body["state"]


def test_failing_receiver_gets_retries_then_every_event(
    gateway: httpx.Client, receiver: Receiver
) -> None:
    path = f"/flaky/3/{new_job_id()}"
    submit(gateway, receiver.url + path)
    wait_until(lambda: "COMPLETE" in states(receiver.delivered(path)), what="COMPLETE webhook")
    attempts = receiver.all(path)
    # The first event was tried four times (503, 503, 503, 204) before any later one.
    assert [h.status for h in attempts[:4]] == [503, 503, 503, 204]
    assert {h.event["state"] for h in attempts[:4]} == {"QUEUED"}
    assert [h.headers["X-Jobgate-Delivery-Attempt"] for h in attempts[:4]] == ["1", "2", "3", "4"]
    assert states(receiver.delivered(path)) == LIFECYCLE


def test_429_is_retried(gateway: httpx.Client, receiver: Receiver) -> None:
    path = f"/busy/2/{new_job_id()}"
    submit(gateway, receiver.url + path)
    wait_until(lambda: "COMPLETE" in states(receiver.delivered(path)), what="COMPLETE webhook")
    assert states(receiver.delivered(path)) == LIFECYCLE
    assert len(receiver.all(path)) == len(LIFECYCLE) + 2


def test_client_errors_are_not_retried(gateway: httpx.Client, receiver: Receiver) -> None:
    path = f"/status/410/{new_job_id()}"
    submit(gateway, receiver.url + path)
    wait_until(lambda: len(receiver.all(path)) == len(LIFECYCLE), what="one try per event")
    time.sleep(0.5)  # more than the backoff: a retry would have come by now
    assert states(receiver.all(path)) == LIFECYCLE


def test_retries_are_bounded(gateway: httpx.Client, receiver: Receiver) -> None:
    path = f"/status/500/{new_job_id()}"
    submit(gateway, receiver.url + path)
    # Five attempts per event (JOBGATE_WEBHOOK_MAX_ATTEMPTS), then the next event.
    wait_until(lambda: len(receiver.all(path)) == 5 * len(LIFECYCLE), what="all attempts")
    time.sleep(0.5)
    hits = receiver.all(path)
    assert len(hits) == 5 * len(LIFECYCLE)
    assert states(hits) == [s for s in LIFECYCLE for _ in range(5)]


def test_hanging_receiver_slows_neither_dispatch_nor_other_jobs(
    gateway: httpx.Client, receiver: Receiver
) -> None:
    hang = f"/hang/{new_job_id()}"
    ok = f"/ok/{new_job_id()}"
    slow_job = submit(gateway, receiver.url + hang)
    # The hanging receiver would hold one event for 5 attempts x 1 s timeout: 20 s for all.
    assert wait_job(gateway, slow_job, timeout=10) < 5
    submit(gateway, receiver.url + ok)
    start = time.monotonic()
    wait_until(lambda: "COMPLETE" in states(receiver.delivered(ok)), 10, "the other job's events")
    assert time.monotonic() - start < 5
    assert states(receiver.delivered(ok)) == LIFECYCLE
    with receiver.lock:
        assert receiver.counts.get(hang, 0) >= 1  # the hanging receiver was called


def test_job_without_callback_sends_nothing(gateway: httpx.Client, receiver: Receiver) -> None:
    silent = submit(gateway, None)
    # TES has no callback: an extra field or a tag of that name is no way to set one.
    tes_task = {
        "executors": [{"image": "alpine", "command": ["true"]}],
        "callback": f"{receiver.url}/ok/tes",
        "tags": {"callback": f"{receiver.url}/ok/tes"},
    }
    task = gateway.post("/ga4gh/tes/v1/tasks", json=tes_task).json()["id"]
    wait_job(gateway, silent)
    wait_until(
        lambda: gateway.get(f"/ga4gh/tes/v1/tasks/{task}").json()["state"] == "COMPLETE",
        what="the TES task",
    )
    # A job with a callback submitted afterwards: once its events are in, earlier ones would be.
    marker = f"/ok/{new_job_id()}"
    submit(gateway, receiver.url + marker)
    wait_until(lambda: "COMPLETE" in states(receiver.delivered(marker)), what="marker webhooks")
    with receiver.lock:
        bodies = [h.event for h in receiver.hits]
    assert not [b for b in bodies if b["job_id"] in (silent, task)]


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_undelivered_events_survive_a_restart(tmp_path: Path, receiver: Receiver, how: str) -> None:
    """Stopped while a receiver is down: after the restart every event arrives, in order.

    No JOBGATE_WEBHOOK_SECRET here: the generated secret must be the same after the restart.
    """
    env = {k: v for k, v in ENV.items() if k != "JOBGATE_WEBHOOK_SECRET"}
    env["JOBGATE_WEBHOOK_MAX_ATTEMPTS"] = "1000"
    srv = Server(tmp_path / "data", env).start()
    path = f"/gate/{new_job_id()}"
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            job_id = submit(client, receiver.url + path)
            wait_job(client, job_id)
            stored = [e["seq"] for e in stored_events(client, job_id)]
        wait_until(lambda: len(receiver.all(path)) >= 3, what="failing attempts")
        if how == "kill -9":
            srv.kill9()
        else:
            srv.stop()
        receiver.gates.add(path)
        secret_before = (tmp_path / "data" / "webhook-secret").read_bytes()
        srv.start()
        wait_until(lambda: "COMPLETE" in states(receiver.delivered(path)), what="replayed events")
    finally:
        srv.stop()
    assert (tmp_path / "data" / "webhook-secret").read_bytes() == secret_before
    hits = receiver.delivered(path)
    # At least once: receivers dedupe on X-Jobgate-Event-Id; the first copies are in order.
    first: dict[str, Hit] = {}
    for h in hits:
        first.setdefault(h.headers["X-Jobgate-Event-Id"], h)
    assert [int(k) for k in first] == stored
    assert states(list(first.values())) == LIFECYCLE
    key = secret_before.strip()
    assert all(verify(key, h.body, h.headers["X-Jobgate-Signature-256"]) for h in hits)


def test_graceful_restart_resumes_from_the_cursor(tmp_path: Path, receiver: Receiver) -> None:
    """Delivered events are not sent again after a clean restart; new ones are."""
    srv = Server(tmp_path / "data", ENV).start()
    path = f"/ok/{new_job_id()}"
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            submit(client, receiver.url + path)
            wait_until(lambda: "COMPLETE" in states(receiver.delivered(path)), what="webhooks")
            srv.stop()
            srv.start()
            submit(client, receiver.url + path)
            wait_until(lambda: len(receiver.delivered(path)) == 2 * len(LIFECYCLE), what="2nd job")
            time.sleep(0.3)
    finally:
        srv.stop()
    assert states(receiver.delivered(path)) == LIFECYCLE * 2


# -- the SSRF guard --------------------------------------------------------------------


def test_callbacks_to_internal_addresses_are_refused_at_submit(
    gateway: httpx.Client, receiver: Receiver
) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    other = port + 1 if port < 65535 else port - 1
    before = len(receiver.hits)
    cases = {
        f"http://127.0.0.1:{other}/ok/x": "127.0.0.1 is a loopback address",
        f"http://localhost:{port}/ok/x": "localhost is a loopback name",
        f"http://2130706433:{other}/ok/x": "127.0.0.1 is a loopback address",  # one number
        f"http://0x7f.1:{other}/ok/x": "127.0.0.1 is a loopback address",
        f"http://[::1]:{port}/ok/x": "[::1] is a loopback address",
        f"http://[::ffff:127.0.0.1]:{port}/ok/x": "is a loopback address",
        "http://169.254.169.254/latest/meta-data/": "cloud metadata",
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/": "6to4 form of a cloud metadata",
        "http://10.1.2.3/hook": "private",
        # Userinfo would become a Basic header; refused even for the allow-listed receiver.
        f"http://u:p@127.0.0.1:{port}/ok/x": "must not carry a user name or password",
        f"http://u@127.0.0.1:{port}/ok/x": "must not carry a user name or password",
        f"ftp://127.0.0.1:{port}/x": "URL scheme should be 'http' or 'https'",
    }
    for url, why in cases.items():
        body = {"script": "true", "callback": url}
        r = gateway.post("/api/v1/jobs", json=body)
        assert r.status_code == 400, (url, r.text)
        errors = r.json()["errors"]
        assert errors[0]["where"] == "body.callback", (url, errors)
        assert why in errors[0]["what"], (url, errors)
        if "password" not in why and "scheme" not in why:
            assert "JOBGATE_WEBHOOK_ALLOWED_HOSTS" in errors[0]["what"]
    # In a bulk submission the refused item fails alone; the other is created.
    bulk = gateway.post(
        "/api/v1/jobs/bulk",
        json={
            "jobs": [
                {"script": "true", "callback": f"http://localhost:{port}/ok/y"},
                {"script": "true"},
            ]
        },
    )
    assert bulk.status_code == 200, bulk.text
    first, second = bulk.json()["results"]
    assert first["error"]["errors"][0]["where"] == "body.jobs[0].callback"
    assert "id" in second and "error" not in second
    time.sleep(0.3)
    # Nothing was sent to the refused URLs (other tests' retries may still arrive).
    assert not [h for h in receiver.hits[before:] if h.path in ("/ok/x", "/ok/y")]


def loopback_name() -> str:
    """A name (not an address, not "localhost") this machine resolves to loopback only."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except socket.gaierror:
        pytest.skip(f"this host's name {name!r} does not resolve")
    if name.lower().endswith("localhost") or not all(
        ipaddress.ip_address(i[4][0]).is_loopback for i in infos
    ):
        pytest.skip(f"this host's name {name!r} does not resolve to loopback only")
    return name


def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    gateway_server: Server, gateway: httpx.Client, receiver: Receiver
) -> None:
    """Submission cannot know where a name leads; delivery resolves it, and refuses."""
    name = loopback_name()
    port = receiver.url.rsplit(":", 1)[1]
    refused = f"/ok/{new_job_id()}"
    ok = f"/ok/{new_job_id()}"
    job_id = submit(gateway, f"http://{name}:{port}{refused}")
    submit(gateway, receiver.url + ok)
    wait_job(gateway, job_id)
    wait_until(lambda: "COMPLETE" in states(receiver.delivered(ok)), what="the other job's events")
    assert states(receiver.delivered(ok)) == LIFECYCLE

    def gave_up() -> list[str]:
        return [ln for ln in gateway_server.log().splitlines() if job_id in ln and "gave up" in ln]

    wait_until(lambda: len(gave_up()) == len(LIFECYCLE), what="every event given up")
    time.sleep(0.5)  # more than the backoff: a retry would have come by now
    lines = gave_up()
    assert len(lines) == len(LIFECYCLE), lines  # once each, not retried
    for line in lines:
        assert f"{name} resolves to 127.0.0.1, which is a loopback address: refused" in line
        assert "JOBGATE_WEBHOOK_ALLOWED_HOSTS" in line
    assert receiver.all(refused) == []


def test_redirects_are_not_followed(
    gateway_server: Server, gateway: httpx.Client, receiver: Receiver
) -> None:
    tag = new_job_id()
    job_id = submit(gateway, f"{receiver.url}/redirect/{tag}")
    wait_until(lambda: len(receiver.all(f"/redirect/{tag}")) == len(LIFECYCLE), what="4 tries")
    time.sleep(0.5)
    assert len(receiver.all(f"/redirect/{tag}")) == len(LIFECYCLE)  # one try per event
    assert receiver.all(f"/ok/{tag}") == []  # the Location was never requested
    lines = [ln for ln in gateway_server.log().splitlines() if job_id in ln and "gave up" in ln]
    assert len(lines) == len(LIFECYCLE) and all("HTTP 302" in ln for ln in lines), lines


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://u:p@example.org/x", "user name or password"),
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://localhost/x", "loopback name"),
        ("file:///etc/passwd", "not an http(s) URL"),
    ],
)
def test_stored_callbacks_are_checked_again_before_sending(url: str, why: str) -> None:
    """Callbacks stored before submission checked them are refused at delivery too."""
    reason = refusal(url, Guard())
    assert reason is not None and why in reason


def test_allow_listed_and_public_callbacks_pass_the_delivery_check() -> None:
    guard = Guard.from_entries(["127.0.0.1:9"])
    assert refusal("http://127.0.0.1:9/x", guard) is None
    assert refusal("https://example.org/hook", guard) is None  # resolved when sent


# -- in process: the sender over a real store and bus ---------------------------------------

SPEC: dict[str, Any] = {"executors": [{"image": "a", "command": ["true"]}]}


@pytest.fixture()
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await migrate(eng)
    jobs = JobStore(eng)
    yield jobs
    jobs.close()
    await eng.dispose()


def sender(store: JobStore, tmp_path: Path) -> Webhooks:
    bus = EventBus()
    store.listeners.append(bus.publish)
    policy = RetryPolicy(max_attempts=3, backoff=0.01, backoff_max=0.05, timeout=1)
    return Webhooks(
        store,
        bus,
        secret=b"k",
        cursor=Cursor(tmp_path / "cursor"),
        policy=policy,
        guard=Guard.from_entries(["127.0.0.1"], "JOBGATE_WEBHOOK_ALLOWED_HOSTS"),
    )


def hooked(url: str) -> NewJob:
    return NewJob(id=new_job_id(), spec={**SPEC, "callback": url}, backend="local")


async def until(check: Callable[[], object]) -> None:
    """Poll ``check`` for up to 20 s (the receiver records on its own threads)."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_first_start_skips_history_then_the_cursor_follows(
    store: JobStore, tmp_path: Path, receiver: Receiver
) -> None:
    old, new = f"/ok/{new_job_id()}", f"/ok/{new_job_id()}"
    await store.create([hooked(receiver.url + old)])
    hooks = sender(store, tmp_path)
    await hooks.start()
    try:
        await store.create([hooked(receiver.url + new)])
        await until(lambda: receiver.delivered(new))
        await until(lambda: hooks.pending == 0)
    finally:
        await hooks.stop()
    assert not receiver.all(old)
    assert Cursor(tmp_path / "cursor").load() == await max_event_seq(store.db)


async def test_a_sender_never_started_leaves_the_cursor_alone(
    store: JobStore, tmp_path: Path
) -> None:
    Cursor(tmp_path / "cursor").save(7)
    await sender(store, tmp_path).stop()
    assert Cursor(tmp_path / "cursor").load() == 7


async def test_a_reused_event_seq_of_a_new_job_is_delivered(
    store: JobStore, tmp_path: Path, receiver: Receiver
) -> None:
    """SQLite numbers a new event after the newest remaining one: deleting the newest job
    hands its seqs out again. The new job's events are still new."""
    first, second = f"/ok/{new_job_id()}", f"/ok/{new_job_id()}"
    hooks = sender(store, tmp_path)
    await hooks.start()
    try:
        doomed = hooked(receiver.url + first)
        await store.create([doomed])
        await until(lambda: receiver.delivered(first))
        await store.delete(doomed.id)
        await store.create([hooked(receiver.url + second)])
        await until(lambda: receiver.delivered(second))
    finally:
        await hooks.stop()
    seqs = [h.event["event_seq"] for h in receiver.delivered(first) + receiver.delivered(second)]
    assert len(seqs) == 2  # equal on SQLite, different on PostgreSQL: delivered either way


async def test_stored_callbacks_with_userinfo_or_to_refused_hosts_are_not_sent(
    store: JobStore, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Callbacks stored before submission refused them: given up once each, nothing sent,
    and the next job's events still go out."""
    port = receiver.url.rsplit(":", 1)[1]
    creds, loop6, ok = (f"/ok/{new_job_id()}" for _ in range(3))
    hooks = sender(store, tmp_path)  # allow-lists 127.0.0.1 (any port)
    await hooks.start()
    try:
        with caplog.at_level(logging.WARNING, logger="jobgate.service.webhooks"):
            await store.create(
                [
                    hooked(f"http://u:p@127.0.0.1:{port}{creds}"),
                    hooked(f"http://[::1]:{port}{loop6}"),
                    hooked(receiver.url + ok),
                ]
            )
            await until(lambda: receiver.delivered(ok))
            await until(lambda: hooks.pending == 0)
    finally:
        await hooks.stop()
    assert receiver.all(creds) == [] and receiver.all(loop6) == []
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 2, gave_up
    assert any("u:***@127.0.0.1" in m and "user name or password" in m for m in gave_up)
    assert not any("u:p@" in m for m in gave_up)  # the password stays out of the log
    assert any("::1 is a loopback address" in m and "WEBHOOK_ALLOWED" in m for m in gave_up)


async def test_falling_behind_the_bus_reads_back_from_the_store(
    store: JobStore, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = sender(store, tmp_path)
    await hooks.start()
    try:
        await until(lambda: hooks.bus.subscribers == 1)
        path = f"/ok/{new_job_id()}"
        # One commit of more events than a subscription holds: the bus drops the tail,
        # where the one job with a callback is.
        many = [NewJob(id=new_job_id(), spec=SPEC, backend="local") for _ in range(10_050)]
        with caplog.at_level(logging.WARNING, logger="jobgate.service.webhooks"):
            await store.create([*many, hooked(receiver.url + path)])
            await until(lambda: receiver.delivered(path))
        assert "fell behind the event bus" in caplog.text
        assert states(receiver.delivered(path)) == ["QUEUED"]
    finally:
        await hooks.stop()


# -- the parts -----------------------------------------------------------------------------


def test_signature_is_github_style() -> None:
    body = b'{"a":1}'
    expected = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert sign(b"k", body) == expected
    assert verify(b"k", body, expected)
    assert not verify(b"k", body + b" ", expected)
    assert not verify(b"other", body, expected)


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(backoff=1.0, backoff_max=10.0)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (30, 10.0)]:
        for _ in range(20):
            assert full / 2 <= policy.delay(attempt) <= full
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=99.0) == 10.0


def test_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_secret(tmp_path)
    assert len(first) == 64
    assert (tmp_path / "webhook-secret").stat().st_mode & 0o777 == 0o600
    assert load_secret(tmp_path) == first
    from pydantic import SecretStr

    assert load_secret(tmp_path, SecretStr("configured")) == b"configured"


async def test_the_database_cursor_takes_the_file_over_and_is_shared_by_the_next_sender(
    store: JobStore, tmp_path: Path, receiver: Receiver
) -> None:
    # A sender that ran with the file cursor before: its number is taken over once.
    Cursor(tmp_path / "cursor").save(await max_event_seq(store.db))
    first = StoredCursor(store.db, legacy=Cursor(tmp_path / "cursor"))
    assert await first.load() == await max_event_seq(store.db)
    hooks = sender(store, tmp_path)
    hooks.cursor = first
    await hooks.start()
    one = f"/ok/{new_job_id()}"
    try:
        await store.create([hooked(receiver.url + one)])
        await until(lambda: receiver.delivered(one))
        await until(lambda: hooks.pending == 0)
    finally:
        await hooks.stop()
    # The next sender (another process, maybe another host) starts where this one ended:
    # from the database, with no file of its own.
    second = StoredCursor(store.db, legacy=Cursor(tmp_path / "elsewhere"))
    assert await second.load() == await max_event_seq(store.db)
    two = f"/ok/{new_job_id()}"
    await store.create([hooked(receiver.url + two)])  # while nobody sends
    hooks = sender(store, tmp_path)
    hooks.cursor = second
    await hooks.start()
    try:
        await until(lambda: receiver.delivered(two))
    finally:
        await hooks.stop()
    assert len(receiver.all(one)) == 1  # not sent again


def test_cursor_round_trips(tmp_path: Path) -> None:
    cursor = Cursor(tmp_path / "c")
    assert cursor.load() is None
    cursor.save(42)
    assert cursor.load() == 42
    (tmp_path / "c").write_text("garbage")
    assert cursor.load() is None


async def test_callback_targets_read_only_jobs_with_callbacks(
    engine: AsyncEngine,  # noqa: F811 - the fixture imported above
) -> None:
    store = JobStore(engine)
    try:
        spec: dict[str, Any] = {"executors": [{"image": "a", "command": ["true"]}]}
        hooked = NewJob(
            id=new_job_id(),
            spec={**spec, "name": "n", "tags": {"k": "v"}, "callback": "http://h/x"},
            backend="local",
        )
        bare = NewJob(id=new_job_id(), spec=spec, backend="local")
        await store.create([hooked, bare])
        found = await callback_targets(store.db, [hooked.id, bare.id, "missing"])
        assert found == {hooked.id: Target("http://h/x", "n", {"k": "v"})}
        assert await callback_targets(store.db, []) == {}
        assert await max_event_seq(store.db) == max(e.seq or 0 for e in await store.events_after(0))
    finally:
        store.close()
