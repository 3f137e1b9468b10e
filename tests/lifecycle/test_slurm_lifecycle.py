"""The lifecycle policies on a real single-node Slurm cluster (slow: two tests)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.slurm.cluster import SlurmCluster
from tests.support import api_client, get_job, submit_job, wait_job, wait_until


@pytest.fixture()
def slurm_api(slurm_server: Server) -> Iterator[httpx.Client]:
    with api_client(slurm_server, timeout=30) as client:
        yield client


def _slurm_id(job: dict[str, object]) -> str:
    logs = job["logs"]
    assert isinstance(logs, list) and logs
    return str(logs[-1]["metadata"]["slurm_job_id"])


def test_walltime_reaches_slurm_and_ends_the_job(
    slurm_api: httpx.Client, slurm_cluster: SlurmCluster
) -> None:
    job_id = submit_job(slurm_api, script="sleep 120", timeouts={"running": 3})
    job = wait_job(slurm_api, job_id, {"RUNNING"}, timeout=60)
    limit = subprocess.run(
        ["squeue", "-h", "-j", _slurm_id(job), "-o", "%l"],
        capture_output=True,
        text=True,
        env=slurm_cluster.env,
    ).stdout.strip()
    assert limit == "2:00", limit  # 3 s rounded up to a minute, plus a minute's grace
    job = wait_job(slurm_api, job_id, timeout=60)
    assert job["state"] == "EXECUTOR_ERROR", job
    assert job["detail"].startswith("walltime exceeded: RUNNING for more than 3s"), job


def test_a_stalled_slurm_job_is_canceled_there_and_retried(slurm_api: httpx.Client) -> None:
    job_id = submit_job(
        slurm_api,
        script="sleep 120",
        heartbeat_timeout=2,
        retry={"count": 1, "on": ["STALLED"], "backoff": 0.1},
    )
    first = _slurm_id(wait_job(slurm_api, job_id, {"RUNNING"}, timeout=60))
    wait_until(lambda: get_job(slurm_api, job_id)["retries"] == 1, 60, "the retry")
    job = wait_job(slurm_api, job_id, {"RUNNING"}, timeout=60)
    wait_until(lambda: len(get_job(slurm_api, job_id)["logs"]) == 2, 30, "a second attempt")
    job = get_job(slurm_api, job_id)
    assert _slurm_id(job) != first
    assert "stalled: no heartbeat" in "".join(job["logs"][0]["system_logs"])
    assert slurm_api.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert wait_job(slurm_api, job_id, timeout=60)["state"] == "CANCELED"
