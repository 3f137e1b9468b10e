"""The Slurm backend through a real jobgate server against a real single-node cluster.

What a user relies on: jobs run through Slurm (not in the gateway), their exit codes,
output and failures come back with Slurm's reason, cancels reach Slurm whether the job
waits or runs, alike jobs go out as one job array, and neither a gateway restart nor a
controller restart loses or duplicates a job.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server
from tests.slurm.cluster import SlurmCluster
from tests.slurm.servers import slurm_env
from tests.support import TERMINAL, create, sh_task, wait_final, wait_state


def squeue(cluster: SlurmCluster, *args: str) -> list[list[str]]:
    res = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r|%j", *args],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=False,
    )
    return [line.split("|") for line in res.stdout.splitlines() if line.strip()]


def slurm_id(task: dict[str, Any]) -> str:
    return str(task["logs"][-1]["metadata"]["slurm_job_id"])


def test_success_runs_on_slurm_and_keeps_output(
    slurm_tes: httpx.Client, slurm_cluster: SlurmCluster
) -> None:
    job = create(
        slurm_tes,
        {
            "inputs": [{"path": "/data/in.txt", "content": "staged\n"}],
            "executors": [
                {"image": "debian", "command": ["cat", "/data/in.txt"]},
                {"image": "debian", "command": ["sh", "-c", "tr a-z A-Z < /data/in.txt"]},
            ],
        },
    )
    task = wait_final(slurm_tes, job, timeout=60)
    assert task["state"] == "COMPLETE", task
    logs = task["logs"][0]["logs"]
    assert [e["exit_code"] for e in logs] == [0, 0]
    assert logs[0]["stdout"] == "staged\n"
    meta = task["logs"][0]["metadata"]
    assert meta["backend"] == "slurm" and meta["slurm_job_id"]
    # Slurm ran it: the controller knows the job under jobgate's name.
    rows = {r[0]: r for r in squeue(slurm_cluster)}
    assert slurm_id(task) in rows, rows
    assert rows[slurm_id(task)][3].startswith("jg-")
    assert rows[slurm_id(task)][1] in ("RUNNING", "COMPLETING", "COMPLETED")


def test_memory_limit_kills_the_task_as_out_of_memory(slurm_tes: httpx.Client) -> None:
    # 64 MiB allowed (sbatch --mem=64M); the executor allocates 300 MiB. On this cluster
    # (TaskPlugin=task/none) Slurm does not enforce --mem itself: the node runner's
    # cgroup does, as on the local backend, and reports the kernel's OOM kill.
    script = "import sys; x = b'a' * (300 * 1024 * 1024); sys.exit(0)"
    job = create(
        slurm_tes,
        {
            "resources": {"ram_gb": 0.0625},
            "executors": [{"image": "python", "command": ["python3", "-c", script]}],
        },
    )
    task = wait_final(slurm_tes, job, timeout=90)
    assert task["state"] == "EXECUTOR_ERROR", task
    assert task["logs"][0]["logs"][0]["exit_code"] != 0
    notes = " ".join(task["logs"][0].get("system_logs") or [])
    assert "memory limit" in notes, task


def test_invalid_partition_is_a_clear_error(slurm_tes: httpx.Client) -> None:
    job = create(slurm_tes, sh_task("true", backend_parameters={"partition": "nosuchpart"}))
    task = wait_final(slurm_tes, job, timeout=60)
    assert task["state"] == "SYSTEM_ERROR"
    notes = " ".join(task["logs"][0]["system_logs"])
    assert "Invalid partition name specified" in notes, task


def test_parameters_are_validated_before_anything_reaches_slurm(
    slurm_tes: httpx.Client, slurm_server: Server
) -> None:
    for key, value in [
        ("partition", "debug --wrap=id"),
        ("time", "1;reboot"),
        ("account", "a\nb"),
        ("gres", "gpu:1 $(id)"),
        ("nodes", "0"),
    ]:
        r = slurm_tes.post("/tasks", json=sh_task("true", backend_parameters={key: value}))
        assert r.status_code == 400, (key, r.text)
        body = r.json()
        assert body["errors"][0]["where"] == f"body.resources.backend_parameters.{key}"
    info = slurm_tes.get("/service-info").json()
    assert {"partition", "account", "qos", "time", "reservation", "constraint"} <= set(
        info["tesResources_backend_parameters"]
    )
    # Valid parameters reach sbatch and the job runs in the partition it named.
    job = create(
        slurm_tes, sh_task("echo ok", backend_parameters={"partition": "tiny", "time": "5"})
    )
    task = wait_final(slurm_tes, job, timeout=60)
    assert task["state"] == "COMPLETE", task


def test_cancel_while_pending_and_while_running(
    slurm_tes: httpx.Client, slurm_cluster: SlurmCluster, slurm_server: Server
) -> None:
    # One job takes every CPU of the node; the next must wait in Slurm's queue. The second
    # is submitted only once the first runs in Slurm: else the backfill scheduler may start
    # the small one first.
    big = create(slurm_tes, sh_task("sleep 300", cpu_cores=slurm_cluster.cpus))
    waiting: str | None = None
    try:
        wait_state(slurm_tes, big, {"RUNNING"}, timeout=30)
        deadline = time.monotonic() + 60
        states: dict[str, str] = {}
        while time.monotonic() < deadline and states.get(f"jg-{big}") != "RUNNING":
            states = {r[3]: r[1] for r in squeue(slurm_cluster)}
            time.sleep(0.2)
        assert states.get(f"jg-{big}") == "RUNNING", states
        waiting = create(slurm_tes, sh_task("echo never", cpu_cores=1))
        # Waiting in Slurm's queue is QUEUED (not RUNNING), and the job's detail says why
        # it waits, in Slurm's words.
        deadline = time.monotonic() + 30
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline and "PENDING (" not in (seen.get("detail") or ""):
            seen = httpx.get(f"{slurm_server.url}/api/v1/jobs/{waiting}").json()
            assert seen["state"] in ("QUEUED", "INITIALIZING"), seen
            time.sleep(0.2)
        assert seen["state"] == "QUEUED", seen
        assert "pending in the Slurm queue; Slurm: PENDING (" in seen["detail"], seen
        slurm_id = slurm_tes.get(f"/tasks/{waiting}", params={"view": "FULL"}).json()["logs"][0][
            "metadata"
        ]["slurm_job_id"]

        # Canceling a job in Slurm's queue stops it there (not just in the gateway).
        assert slurm_tes.post(f"/tasks/{waiting}:cancel").status_code == 200
        task = wait_final(slurm_tes, waiting, timeout=30)
        assert task["state"] == "CANCELED"
        deadline = time.monotonic() + 20
        gone = None
        while time.monotonic() < deadline:
            gone = {r[0]: r[1] for r in squeue(slurm_cluster)}.get(slurm_id)
            if gone in (None, "CANCELLED"):
                break
            time.sleep(0.2)
        assert gone in (None, "CANCELLED"), gone
        assert slurm_tes.post(f"/tasks/{big}:cancel").status_code == 200
        task = wait_final(slurm_tes, big, timeout=30)
        assert task["state"] == "CANCELED"
        # Slurm stopped it too (the sleep is gone, the job is CANCELLED).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = {r[3]: r[1] for r in squeue(slurm_cluster)}.get(f"jg-{big}")
            if state == "CANCELLED":
                break
            time.sleep(0.2)
        assert state == "CANCELLED"
    finally:
        # A failure here must not leave the node full for the tests after it.
        for job in (big, waiting):
            if job is not None:
                slurm_tes.post(f"/tasks/{job}:cancel")


def test_time_limit_ends_the_task_with_slurms_reason(slurm_tes: httpx.Client) -> None:
    # Slurm's smallest limit is one minute, checked about every 30 s: this takes ~1.5 min.
    job = create(slurm_tes, sh_task("sleep 600", backend_parameters={"time": "1"}))
    task = wait_final(slurm_tes, job, timeout=200)
    assert task["state"] == "EXECUTOR_ERROR", task
    r = slurm_tes.get(f"/tasks/{job}", params={"view": "FULL"}).json()
    notes = " ".join(r["logs"][0]["system_logs"])
    assert "time limit" in notes and "TIMEOUT" in notes, notes


def test_array_of_100_alike_jobs(slurm_server: Server) -> None:
    with httpx.Client(base_url=slurm_server.url + "/api/v1", timeout=60) as api:
        r = api.post(
            "/jobs/parametric",
            json={"job": {"script": "echo item {{ i }}"}, "parameters": {"i": list(range(100))}},
        )
        assert r.status_code == 200, r.text
        ids = [x["id"] for x in r.json()["results"]]
        assert len(ids) == 100
        deadline = time.monotonic() + 240
        jobs: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and len(jobs) < len(ids):
            for job_id in ids:
                if job_id not in jobs:
                    job = api.get(f"/jobs/{job_id}").json()
                    if job["state"] in TERMINAL:
                        jobs[job_id] = job
            time.sleep(0.5)
        assert len(jobs) == 100, f"{len(jobs)} of 100 finished"
    arrays = set()
    for i, job_id in enumerate(ids):
        job = jobs[job_id]
        assert job["state"] == "COMPLETE", job
        assert job["logs"][0]["logs"][0]["stdout"] == f"item {i}\n"
        nid = job["logs"][0]["metadata"]["slurm_job_id"]
        arrays.add(nid.split("_")[0])  # an array's id, or a job that went alone
    # Alike jobs arriving together share arrays: far fewer sbatch calls than jobs.
    assert len(arrays) <= 10, arrays


def test_gateway_restart_readopts_jobs_without_resubmitting(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    srv = Server(tmp_path / "data", slurm_env(slurm_cluster, tmp_path / "shared")).start()
    try:
        with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
            ids = [create(client, sh_task(f"sleep 4; echo done {i}")) for i in range(3)]
            running = [wait_state(client, j, {"RUNNING"}, timeout=30) for j in ids]
            before = {t["id"]: slurm_id(t) for t in running}
            srv.kill9()
            srv.start()
            done = [wait_final(client, j, timeout=60) for j in ids]
        for i, task in enumerate(done):
            assert task["state"] == "COMPLETE", task
            assert len(task["logs"]) == 1, task  # one attempt: re-adopted, not run again
            assert task["logs"][0]["logs"][0]["stdout"] == f"done {i}\n"
            assert slurm_id(task) == before[task["id"]]
        # Slurm saw each job once: no job was submitted after the restart (Slurm's ids
        # grow; finished jobs stay listed for MinJobAge=5 s, longer than a rerun takes).
        newest = max(int(nid.split("_")[0]) for nid in before.values())
        later = [r for r in squeue(slurm_cluster) if int(r[0].split("_")[0]) > newest]
        assert later == [], later
    finally:
        srv.stop()


def test_controller_restart_loses_no_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", slurm_env(slurm_cluster, tmp_path / "shared")).start()
    try:
        with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
            first = [create(client, sh_task(f"sleep 3; echo first {i}")) for i in range(3)]
            for j in first:
                wait_state(client, j, {"RUNNING"}, timeout=30)
            slurm_cluster.stop_controller()
            waiting: set[str] = set()
            try:
                # Submitted while the controller is down for 60 s: the jobs wait in the
                # gateway's queue, saying why, and none fails.
                later = [create(client, sh_task(f"echo later {i}")) for i in range(2)]
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    for j in later:
                        job = httpx.get(f"{srv.url}/api/v1/jobs/{j}").json()
                        assert job["state"] in ("QUEUED", "INITIALIZING"), job
                        if job["state"] == "QUEUED" and "waiting for backend slurm: " in (
                            job["detail"] or ""
                        ):
                            waiting.add(j)
                    time.sleep(1)
            finally:
                slurm_cluster.start_controller()
            assert waiting == set(later)
            tasks = [wait_final(client, j, timeout=120) for j in [*first, *later]]
        outs = [t["logs"][-1]["logs"][0]["stdout"] for t in tasks]
        assert [t["state"] for t in tasks] == ["COMPLETE"] * 5, tasks
        assert outs == [*(f"first {i}\n" for i in range(3)), *(f"later {i}\n" for i in range(2))]
        assert all(len(t["logs"]) == 1 for t in tasks)
    finally:
        srv.stop()
        slurm_cluster.wait_idle(states=("idle", "mix", "mixed", "alloc", "allocated"))


def test_disk_and_cpus_reach_slurm_and_impossible_requests_say_so(
    slurm_tes: httpx.Client, slurm_cluster: SlurmCluster
) -> None:
    # The node has TmpDisk=100000 MiB and 8 CPUs.
    fits = create(slurm_tes, sh_task("echo fits", cpu_cores=2, disk_gb=1, ram_gb=0.5))
    too_big = create(slurm_tes, sh_task("echo never", disk_gb=500))
    task = wait_final(slurm_tes, fits, timeout=60)
    assert task["state"] == "COMPLETE", task
    task = wait_final(slurm_tes, too_big, timeout=60)
    assert task["state"] == "SYSTEM_ERROR"
    notes = " ".join(task["logs"][0]["system_logs"])
    assert "Requested node configuration is not available" in notes, notes
