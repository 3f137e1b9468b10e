"""``/metrics`` of a real server: the values move as jobs run through it.

Scrapes are parsed with prometheus-client's own text parser, as Prometheus reads them.
"""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server
from tests.support import serve_http, sh, sh_task, sleep_marker, wait_until

PAYLOAD = b"x" * 12345

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class _Files(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/payload":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200 if self.path == "/ok" else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def files_url() -> Iterator[str]:
    with serve_http(_Files, quiet_errors=True) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, files_url: str) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("metrics") / "data",
        {
            "JOBGATE_METRICS_JOBS_INTERVAL": "0.1",
            "JOBGATE_WEBHOOK_ALLOWED_HOSTS": files_url.removeprefix("http://"),
            "JOBGATE_WEBHOOK_MAX_ATTEMPTS": "2",
            "JOBGATE_WEBHOOK_BACKOFF": "0.05",
        },
    ).start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def wait_state(client: httpx.Client, task_id: str, states: set[str]) -> str:
    seen = ""

    def reached() -> bool:
        nonlocal seen
        seen = client.get(f"/ga4gh/tes/v1/tasks/{task_id}").json()["state"]
        return seen in states

    wait_until(reached, 30, f"task {task_id} in {states}")
    return seen


def test_a_job_that_runs_moves_the_counters_and_histograms(
    client: httpx.Client, files_url: str
) -> None:
    before = scrape(client)
    task = {
        "inputs": [{"url": f"{files_url}/payload", "path": "/data/in"}],
        "executors": [sh("wc -c < /data/in")],
    }
    r = client.post("/ga4gh/tes/v1/tasks", json=task)
    assert r.status_code == 200, r.text
    task_id = r.json()["id"]
    assert wait_state(client, task_id, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}) == (
        "COMPLETE"
    )
    after = scrape(client)

    assert delta(before, after, "jobgate_submissions_total", backend="local") == 1
    for frm, to in [
        ("none", "QUEUED"),
        ("QUEUED", "INITIALIZING"),
        ("INITIALIZING", "RUNNING"),
        ("RUNNING", "COMPLETE"),
    ]:
        assert delta(before, after, "jobgate_transitions_total", from_state=frm, to_state=to) == 1
    assert delta(before, after, "jobgate_staging_bytes_total", direction="in", scheme="http") == (
        len(PAYLOAD)
    )
    for hist in (
        "jobgate_job_queue_wait_seconds",
        "jobgate_job_submit_latency_seconds",
        "jobgate_job_first_run_latency_seconds",
    ):
        assert delta(before, after, f"{hist}_count", backend="local") == 1
        # The job started within seconds: it is in the 30 s bucket and every one above.
        assert delta(before, after, f"{hist}_bucket", backend="local", le="30.0") == 1
        assert delta(before, after, f"{hist}_bucket", backend="local", le="+Inf") == 1
        assert delta(before, after, f"{hist}_bucket", backend="local", le="0.05") in (0, 1)
    assert (
        delta(before, after, "jobgate_backend_call_seconds_count", backend="local", call="submit")
        == 1
    )
    # HTTP requests by route template (the id is not a label value) and status.
    posted = dict(method="POST", route="/ga4gh/tes/v1/tasks", status="200")
    assert delta(before, after, "jobgate_http_requests_total", **posted) == 1
    got = dict(method="GET", route="/ga4gh/tes/v1/tasks/{task_id}", status="200")
    assert delta(before, after, "jobgate_http_requests_total", **got) >= 1
    assert not any(task_id in str(labels) for _, labels in after)
    assert (
        delta(
            before,
            after,
            "jobgate_http_request_seconds_count",
            method="POST",
            route="/ga4gh/tes/v1/tasks",
        )
        == 1
    )
    assert delta(before, after, "jobgate_db_transaction_seconds_count", kind="write") >= 4
    assert delta(before, after, "jobgate_db_transaction_seconds_count", kind="read") >= 1


def test_the_jobs_gauge_follows_a_job_through_its_states(client: httpx.Client) -> None:
    marker = sleep_marker()
    r = client.post("/ga4gh/tes/v1/tasks", json=sh_task(f"sleep {marker}"))
    task_id = r.json()["id"]
    wait_state(client, task_id, {"RUNNING"})
    wait_until(
        lambda: value(scrape(client), "jobgate_jobs", backend="local", state="RUNNING") >= 1,
        10,
        "the gauge to count the running job",
    )
    canceled = value(scrape(client), "jobgate_jobs", backend="local", state="CANCELED")
    assert client.post(f"/ga4gh/tes/v1/tasks/{task_id}:cancel").status_code == 200
    wait_state(client, task_id, {"CANCELED"})
    wait_until(
        lambda: (
            value(scrape(client), "jobgate_jobs", backend="local", state="CANCELED") == canceled + 1
        ),
        10,
        "the gauge to count the canceled job",
    )
    samples = scrape(client)
    # Every state of a configured backend is there, empty ones at 0.
    assert ("jobgate_jobs", frozenset({("backend", "local"), ("state", "PAUSED")})) in samples
    assert value(samples, "jobgate_jobs_counted_timestamp_seconds") > 0


def test_staging_errors_and_webhooks_are_counted(client: httpx.Client, files_url: str) -> None:
    before = scrape(client)
    task = {
        "inputs": [{"url": f"{files_url}/missing", "path": "/data/in"}],
        "executors": [sh("true")],
    }
    task_id = client.post("/ga4gh/tes/v1/tasks", json=task).json()["id"]
    assert wait_state(client, task_id, {"COMPLETE", "SYSTEM_ERROR"}) == "SYSTEM_ERROR"
    for path in ("ok", "fail"):
        body = {"name": "hook", "script": "true", "callback": f"{files_url}/{path}"}
        assert client.post("/api/v1/jobs", json=body).status_code == 201
    after: Samples = {}

    def settled() -> bool:
        nonlocal after
        after = scrape(client)
        # Each job sends several events (QUEUED … COMPLETE); wait for both kinds.
        return (
            delta(before, after, "jobgate_webhook_deliveries_total", outcome="delivered") >= 3
            and delta(before, after, "jobgate_webhook_deliveries_total", outcome="failed") >= 3
        )

    wait_until(settled, 30, "webhook deliveries and failures to be counted")
    assert delta(before, after, "jobgate_staging_errors_total", direction="in", scheme="http") == 1
    # Two attempts for each failed event (JOBGATE_WEBHOOK_MAX_ATTEMPTS=2), one per delivered.
    failed = delta(before, after, "jobgate_webhook_deliveries_total", outcome="failed")
    assert delta(before, after, "jobgate_webhook_attempts_total", outcome="error") >= 2 * failed


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("metrics-token") / "data",
        {
            "JOBGATE_AUTH": "token",
            "JOBGATE_METRICS_ACCESS": "token",
            "JOBGATE_METRICS_TOKEN": "scrape-secret",
        },
    ).start()
    yield srv
    srv.stop()


def test_metrics_access_token(guarded: Server) -> None:
    url = guarded.url + "/metrics"
    r = httpx.get(url)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.get(url, headers={"Authorization": "Bearer scrape-secret"})
    assert r.status_code == 200
    assert "jobgate_jobs{" in r.text
    admin = (Path(guarded.data_dir) / "admin-token").read_text().strip()
    assert httpx.get(url, headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    # The health check stays open: a container's health probe has no token.
    assert httpx.get(guarded.url + "/healthz").status_code == 200
