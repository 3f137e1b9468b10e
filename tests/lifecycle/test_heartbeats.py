"""Heartbeats and stalled jobs through HTTP on the local backend."""

from __future__ import annotations

import time

import httpx

from tests.support import get_job, submit_job, wait_job, wait_until


def _details(api: httpx.Client, job_id: str) -> list[str]:
    return [str(e["detail"]) for e in api.get(f"/jobs/{job_id}/events").json()["events"]]


def test_a_silent_job_stalls_and_heartbeats_bring_it_back(api: httpx.Client) -> None:
    job_id = submit_job(api, script="sleep 6", heartbeat_timeout=1)
    wait_job(api, job_id, {"RUNNING"})
    r = api.patch(f"/jobs/{job_id}/heartbeat", json={"load": 0.5, "cpu_seconds": 1.5})
    assert r.status_code == 204, r.text
    wait_until(lambda: get_job(api, job_id)["heartbeat"] is not None, 10, "the heartbeat")
    assert get_job(api, job_id)["heartbeat"]["cpu_seconds"] == 1.5
    wait_until(lambda: get_job(api, job_id)["stalled"], 10, "the stall")
    job = get_job(api, job_id)
    assert job["state"] == "RUNNING" and job["detail"].startswith("stalled: no heartbeat")
    assert api.patch(f"/jobs/{job_id}/heartbeat", json={"app_status": "step 2"}).status_code == 204
    wait_until(lambda: not get_job(api, job_id)["stalled"], 10, "the job alive again")
    job = wait_job(api, job_id)
    assert job["state"] == "COMPLETE"
    assert job["app_status"] == "step 2"
    details = _details(api, job_id)
    assert any(d.startswith("stalled:") for d in details)
    assert "running (heartbeats again)" in details
    # The job ended: its heartbeats are refused once the gateway knows it.
    api.patch(f"/jobs/{job_id}/heartbeat", json={})
    time.sleep(0.5)
    assert api.patch(f"/jobs/{job_id}/heartbeat", json={}).status_code == 409


def test_a_stalled_job_is_retried_when_its_policy_says_so(api: httpx.Client) -> None:
    job_id = submit_job(
        api,
        script="sleep 30",
        heartbeat_timeout=1,
        retry={"count": 1, "on": ["STALLED"], "backoff": 0.1},
    )
    wait_until(lambda: get_job(api, job_id)["retries"] == 1, 30, "the retry")
    job = wait_job(api, job_id, {"RUNNING"})
    wait_until(lambda: get_job(api, job_id)["stalled"], 10, "the second stall")
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_job(api, job_id)
    assert job["state"] == "CANCELED"
    assert len(job["logs"]) == 2
    assert "stalled: no heartbeat" in "".join(job["logs"][0]["system_logs"])
    assert any(d.startswith("retry 1 of 1 after STALLED") for d in _details(api, job_id))


BEAT = """python3 - <<'PY'
import json, os, urllib.request
req = urllib.request.Request(
    os.environ["JOBGATE_JOB_URL"] + "/heartbeat",
    data=json.dumps({"load": 0.25, "app_status": "from inside"}).encode(),
    method="PATCH",
    headers={"Authorization": "Bearer " + os.environ["JOBGATE_JOB_TOKEN"],
             "Content-Type": "application/json"},
)
print(urllib.request.urlopen(req).status)
other = urllib.request.Request(os.environ["JOBGATE_JOB_URL"],
    headers={"Authorization": "Bearer " + os.environ["JOBGATE_JOB_TOKEN"]})
try:
    urllib.request.urlopen(other)
except urllib.error.HTTPError as exc:
    print(exc.code)
PY
sleep 1"""


def test_a_job_reports_with_its_own_token(api: httpx.Client) -> None:
    job = wait_job(api, submit_job(api, script=BEAT, heartbeat_timeout=30), timeout=60)
    assert job["state"] == "COMPLETE", job
    stdout = job["logs"][-1]["logs"][0]["stdout"].split()
    assert stdout == ["204", "403"], stdout  # its heartbeat, but no other route
    assert job["heartbeat"]["from"] == f"job:{job['id']}"
    assert job["app_status"] == "from inside"
    forged = {"Authorization": f"Bearer jgjob.{job['id']}.{'0' * 40}"}
    assert api.patch(f"/jobs/{job['id']}/heartbeat", json={}, headers=forged).status_code == 401
