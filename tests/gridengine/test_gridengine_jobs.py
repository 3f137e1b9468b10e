"""The Grid Engine backend through a real jobgate server against the real single-node cell.

What a user relies on: tasks run through Grid Engine (not in the gateway) with their exit
codes and output; a task waiting in Grid Engine's queue is QUEUED with Grid Engine's
words in its detail; cancels reach Grid Engine whether the job waits or runs; alike jobs
go out as one array job; backend_parameters are checked before anything reaches qsub.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from jobgate.backends.gridengine import parse
from tests.conftest import Server
from tests.gridengine.cluster import GridEngineCluster
from tests.support import TERMINAL, create, sh_task, wait_final, wait_state


def ge_id(task: dict[str, Any]) -> str:
    return str(task["logs"][-1]["metadata"]["gridengine_job_id"])


def listed(cluster: GridEngineCluster) -> dict[str, parse.QueueEntry]:
    return parse.qstat_xml(cluster.run("qstat", "-xml", "-u", "root").stdout)


def accounted(cluster: GridEngineCluster, nid: str, timeout: float = 20) -> list[str]:
    """``qacct``'s job names for ``nid`` once it has a record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = cluster.run("qacct", "-j", nid.split(".")[0], check=False)
        if res.returncode == 0:
            return [r.name for r in parse.qacct_records(res.stdout)]
        time.sleep(0.5)
    raise AssertionError(f"qacct never had job {nid}")


def test_success_runs_on_grid_engine_and_keeps_output(
    gridengine_tes: httpx.Client, gridengine_cluster: GridEngineCluster
) -> None:
    job = create(
        gridengine_tes,
        {
            "inputs": [{"path": "/data/in.txt", "content": "staged\n"}],
            "executors": [
                {"image": "debian", "command": ["cat", "/data/in.txt"]},
                {"image": "debian", "command": ["sh", "-c", "tr a-z A-Z < /data/in.txt"]},
            ],
        },
    )
    task = wait_final(gridengine_tes, job, timeout=60)
    assert task["state"] == "COMPLETE", task
    logs = task["logs"][0]["logs"]
    assert [e["exit_code"] for e in logs] == [0, 0]
    assert [e["stdout"] for e in logs] == ["staged\n", "STAGED\n"]
    meta = task["logs"][0]["metadata"]
    assert meta["backend"] == "gridengine" and meta["type"] == "gridengine"
    # Grid Engine ran it, under jobgate's name for the task.
    assert accounted(gridengine_cluster, ge_id(task)) == [f"jg-{job}"]


def test_waiting_in_grid_engine_is_queued_and_cancel_removes_it_there(
    gridengine_tes: httpx.Client,
    gridengine_cluster: GridEngineCluster,
    gridengine_server: Server,
) -> None:
    ge = gridengine_cluster
    ge.run("qmod", "-d", ge.queue)  # nothing starts while the queue is disabled
    waiting = later = None
    try:
        waiting = create(gridengine_tes, sh_task("echo never"))
        later = create(gridengine_tes, sh_task("echo later"))
        # QUEUED (not RUNNING), with the reason in Grid Engine's words.
        deadline = time.monotonic() + 30
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline and "Grid Engine: qw" not in (seen.get("detail") or ""):
            seen = httpx.get(f"{gridengine_server.url}/api/v1/jobs/{waiting}").json()
            assert seen["state"] in ("QUEUED", "INITIALIZING"), seen
            time.sleep(0.2)
        assert seen["state"] == "QUEUED", seen
        assert "waiting in the Grid Engine queue" in seen["detail"], seen
        nid = ge_id(gridengine_tes.get(f"/tasks/{waiting}", params={"view": "FULL"}).json())
        assert listed(ge)[nid].state == "qw"

        # Canceling it stops it in Grid Engine, not only in the gateway.
        assert gridengine_tes.post(f"/tasks/{waiting}:cancel").status_code == 200
        assert wait_final(gridengine_tes, waiting, timeout=30)["state"] == "CANCELED"
        deadline = time.monotonic() + 20
        while nid in listed(ge):
            assert time.monotonic() < deadline, "qdel never reached Grid Engine"
            time.sleep(0.2)
    finally:
        ge.run("qmod", "-e", ge.queue)
    # The other one runs once the queue takes jobs again.
    assert later is not None
    task = wait_final(gridengine_tes, later, timeout=60)
    assert task["state"] == "COMPLETE" and task["logs"][0]["logs"][0]["stdout"] == "later\n"


def test_cancel_reaches_a_running_job(
    gridengine_tes: httpx.Client, gridengine_cluster: GridEngineCluster
) -> None:
    job = create(gridengine_tes, sh_task("sleep 300"))
    try:
        task = wait_state(gridengine_tes, job, {"RUNNING"}, timeout=60)
        nid = ge_id(task)
        deadline = time.monotonic() + 30
        while (entry := listed(gridengine_cluster).get(nid)) is None or entry.state != "r":
            assert time.monotonic() < deadline, entry
            time.sleep(0.2)
        assert gridengine_tes.post(f"/tasks/{job}:cancel").status_code == 200
        assert wait_final(gridengine_tes, job, timeout=30)["state"] == "CANCELED"
        deadline = time.monotonic() + 20
        while nid in listed(gridengine_cluster):
            assert time.monotonic() < deadline, "the job still runs in Grid Engine"
            time.sleep(0.2)
    finally:
        gridengine_tes.post(f"/tasks/{job}:cancel")


def test_alike_jobs_go_out_as_one_array(gridengine_server: Server) -> None:
    with httpx.Client(base_url=gridengine_server.url + "/api/v1", timeout=60) as api:
        r = api.post(
            "/jobs/parametric",
            json={"job": {"script": "echo item {{ i }}"}, "parameters": {"i": list(range(6))}},
        )
        assert r.status_code == 200, r.text
        ids = [x["id"] for x in r.json()["results"]]
        deadline = time.monotonic() + 120
        jobs: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and len(jobs) < len(ids):
            for job_id in ids:
                if job_id not in jobs:
                    job = api.get(f"/jobs/{job_id}").json()
                    if job["state"] in TERMINAL:
                        jobs[job_id] = job
            time.sleep(0.3)
    assert len(jobs) == len(ids), f"{len(jobs)} of {len(ids)} finished"
    arrays = set()
    for i, job_id in enumerate(ids):
        job = jobs[job_id]
        assert job["state"] == "COMPLETE", job
        assert job["logs"][0]["logs"][0]["stdout"] == f"item {i}\n"
        nid = job["logs"][0]["metadata"]["gridengine_job_id"]
        assert "." in nid, nid  # an array task: JOB.TASK
        arrays.add(nid.split(".")[0])
    # Submitted together, alike: far fewer qsub calls than jobs.
    assert len(arrays) <= 2, arrays


def test_parameters_are_validated_before_anything_reaches_qsub(
    gridengine_tes: httpx.Client, gridengine_cluster: GridEngineCluster
) -> None:
    for key, value in [
        ("queue", "all.q -V"),
        ("queue", "-V"),
        ("time", "1;reboot"),
        ("project", "$(id)"),
        ("resources", "gpu=1 -V"),
    ]:
        r = gridengine_tes.post("/tasks", json=sh_task("true", backend_parameters={key: value}))
        assert r.status_code == 400, (key, r.text)
        assert r.json()["errors"][0]["where"] == f"body.resources.backend_parameters.{key}"
    info = gridengine_tes.get("/service-info").json()
    assert {"queue", "project", "time", "pe", "resources"} <= set(
        info["tesResources_backend_parameters"]
    )
    # Valid ones reach qsub; a queue Grid Engine does not have is its refusal, in its words.
    ok = create(
        gridengine_tes,
        sh_task("echo ok", cpu_cores=2, ram_gb=0.5, backend_parameters={"time": "0:05:00"}),
    )
    assert wait_final(gridengine_tes, ok, timeout=60)["state"] == "COMPLETE"
    bad = create(gridengine_tes, sh_task("true", backend_parameters={"queue": "nosuch.q"}))
    task = wait_final(gridengine_tes, bad, timeout=60)
    assert task["state"] == "SYSTEM_ERROR"
    notes = " ".join(task["logs"][0]["system_logs"])
    assert 'unknown queue "nosuch.q"' in notes, task


def test_a_qmaster_outage_loses_and_fails_nothing(
    gridengine_tes: httpx.Client,
    gridengine_cluster: GridEngineCluster,
    gridengine_server: Server,
) -> None:
    ge = gridengine_cluster
    running = create(gridengine_tes, sh_task("sleep 6; echo ran through"))
    wait_state(gridengine_tes, running, {"RUNNING"}, timeout=60)
    ge.stop_qmaster()
    try:
        # Submitted while the qmaster is down: they wait in the gateway, saying why.
        ids = [create(gridengine_tes, sh_task(f"echo after {i}")) for i in range(3)]
        deadline = time.monotonic() + 30
        details: dict[str, str] = {}
        while time.monotonic() < deadline and len(details) < len(ids):
            for job_id in ids:
                job = httpx.get(f"{gridengine_server.url}/api/v1/jobs/{job_id}").json()
                assert job["state"] in ("QUEUED", "INITIALIZING"), job
                if "waiting for backend gridengine" in (job["detail"] or ""):
                    details[job_id] = job["detail"]
            time.sleep(0.3)
        assert len(details) == len(ids), details
        assert all("qmaster" in d for d in details.values()), details
        # The running one keeps running (the exec host does not need the qmaster).
        assert gridengine_tes.get(f"/tasks/{running}").json()["state"] == "RUNNING"
        time.sleep(5)
    finally:
        ge.start_qmaster()
        ge.wait_ready()
    for job_id, i in zip(ids, range(3), strict=True):
        task = wait_final(gridengine_tes, job_id, timeout=90)
        assert task["state"] == "COMPLETE", task
        assert task["logs"][-1]["logs"][0]["stdout"] == f"after {i}\n"
    task = wait_final(gridengine_tes, running, timeout=60)
    assert task["state"] == "COMPLETE" and task["logs"][0]["logs"][0]["stdout"] == "ran through\n"
