"""Per-state timeouts and retry policies through HTTP on the local backend."""

from __future__ import annotations

import http.server
import time

import httpx

from tests.support import get_job, serve_http, submit_job, wait_job, wait_until


def _events(api: httpx.Client, job_id: str) -> list[dict[str, object]]:
    r = api.get(f"/jobs/{job_id}/events")
    assert r.status_code == 200, r.text
    events: list[dict[str, object]] = r.json()["events"]
    return events


def test_walltime_ends_the_job_with_its_reason(api: httpx.Client) -> None:
    job_id = submit_job(api, script="sleep 60", timeouts={"running": 1})
    job = wait_job(api, job_id, timeout=30)
    assert job["state"] == "EXECUTOR_ERROR", job
    assert "walltime exceeded" in job["detail"]
    assert "walltime exceeded" in "".join(job["logs"][-1]["system_logs"])


def test_queued_timeout_ends_a_waiting_job(api: httpx.Client) -> None:
    # A job taking every slot (the test server has 4) keeps the next one queued.
    blocker = submit_job(api, script="sleep 60", resources={"cpu_cores": 4})
    wait_job(api, blocker, {"RUNNING"})
    job_id = submit_job(api, script="true", timeouts={"queued": 1})
    try:
        job = wait_job(api, job_id, timeout=30)
    finally:
        api.post(f"/jobs/{blocker}/cancel")
    assert job["state"] == "SYSTEM_ERROR", job
    assert job["detail"].startswith("queued timeout exceeded"), job


def test_initializing_timeout_ends_a_slow_stage_in(api: httpx.Client) -> None:
    # An input from a server that answers slowly keeps the job staging.
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(8)
            self.send_response(404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serve_http(Slow, quiet_errors=True) as url:
        job_id = submit_job(
            api,
            script="true",
            inputs=[{"url": f"{url}/slow", "path": "/in/x"}],
            timeouts={"initializing": 1},
        )
        job = wait_job(api, job_id, timeout=30)
    assert job["state"] == "SYSTEM_ERROR", job
    assert job["detail"].startswith("initializing timeout exceeded"), job


def test_executor_error_is_retried_when_asked_each_attempt_logged(api: httpx.Client) -> None:
    job_id = submit_job(
        api, script="exit 3", retry={"count": 2, "on": ["EXECUTOR_ERROR"], "backoff": 0.1}
    )

    def settled() -> bool:
        job = get_job(api, job_id)
        return job["state"] == "EXECUTOR_ERROR" and job["retries"] == 2

    wait_until(settled, 60, "two retries")
    job = get_job(api, job_id)
    assert len(job["logs"]) == 3
    assert [log["metadata"].get("retry") for log in job["logs"]] == [None, "1", "2"]
    details = [str(e["detail"]) for e in _events(api, job_id)]
    assert any(d.startswith("retry 1 of 2 after EXECUTOR_ERROR") for d in details), details
    assert any(d.startswith("retry 2 of 2") for d in details), details
    r = api.post(
        "/jobs/search",
        json={"filters": [{"field": "id", "op": "eq", "value": job_id}], "fields": ["retries"]},
    )
    assert r.json()["jobs"][0]["retries"] == 2


def test_executor_error_is_not_retried_by_default(api: httpx.Client) -> None:
    job = wait_job(api, submit_job(api, script="exit 3", retry={"count": 2}))
    assert job["state"] == "EXECUTOR_ERROR" and job["retries"] == 0
