"""SKA SRCNet worksteps (``/v1/worksteps``) against a real server: shapes, routing, states."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobgate.api.worksteps import STATES, status_view
from jobgate.domain.models import JobEvent, JobRecord
from jobgate.domain.states import State
from tests.conftest import Server

REQUEST: dict[str, Any] = {
    "container_image": "docker://python:3.12-alpine",
    "executable_entrypoint": "echo 'Hello, World!'",
    "execution": "batch",
    "system_parameters": {"src_node": ["CHSRC"], "cpu_cores": 1, "memory_gb": 2},
}
STATUS_KEYS = {
    "id",
    "workflow_id",
    "created_by",
    "container_image",
    "executable_entrypoint",
    "execution",
    "system_parameters",
    "input_data",
    "output_data",
    "state",
    "started_at",
    "provenance_json",
}
FINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def srcnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A gateway serving two SRCNet nodes, both on the local backend."""
    data = tmp_path_factory.mktemp("srcnet") / "data"
    srv = Server(data, {"JOBGATE_SRC_NODES": "CHSRC=local,UKSRC=local"}).start()
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        yield client
    srv.stop()


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    r = client.post("/v1/worksteps", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def wait_final(client: httpx.Client, ws_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Poll until final; every status document seen, in order."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/worksteps/{ws_id}").json()
        seen.append(status)
        if status["state"] in FINAL:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"workstep {ws_id} not final after {timeout}s: {seen[-1]}")


def test_every_job_state_has_a_workstep_state() -> None:
    assert set(STATES) == set(State)
    assert set(STATES.values()) <= {
        "queued",
        "held",
        "pending",
        "running",
        "cancelling",
        "completed",
        "failed",
        "cancelled",
        "unknown",
    }


def test_submit_answers_in_the_srcnet_shape(srcnet: httpx.Client) -> None:
    r = srcnet.post("/v1/worksteps", json=REQUEST)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"response_code", "response_text", "id"}
    assert body["response_code"] == 200
    assert body["response_text"] == "Job submitted successfully."
    assert str(uuid.UUID(body["id"])) == body["id"]


def test_status_round_trips_the_request(srcnet: httpx.Client) -> None:
    extra = {
        "workflow_id": "wf-42",
        "input_data": [{"uri": "s3://bucket/in/", "format": "FITS", "role": "reader"}],
        "output_data": [{"uri": "s3://bucket/out/"}],
        "provenance_json": {"pipeline": "demo", "version": 3},
    }
    ws_id = submit(srcnet, {**REQUEST, **extra})
    status = srcnet.get(f"/v1/worksteps/{ws_id}").json()
    assert set(status) == STATUS_KEYS
    assert status["id"] == ws_id
    assert status["created_by"] == "anonymous"
    for key in ("container_image", "executable_entrypoint", "execution", "system_parameters"):
        assert status[key] == REQUEST[key]
    for key, value in extra.items():
        assert status[key] == value
    assert status["state"] in {"queued", "pending", "running", "completed"}


def test_minimal_status_has_every_key(srcnet: httpx.Client) -> None:
    ws_id = submit(srcnet, {"container_image": "alpine", "executable_entrypoint": "true"})
    status = srcnet.get(f"/v1/worksteps/{ws_id}").json()
    assert set(status) == STATUS_KEYS
    assert status["workflow_id"] is None
    assert status["input_data"] == [] and status["output_data"] == []
    assert status["provenance_json"] == {}
    assert status["execution"] == "batch"


def test_workstep_runs_to_completion_as_a_job(srcnet: httpx.Client) -> None:
    body = {**REQUEST, "executable_entrypoint": "sleep 0.5; echo 'Hello, World!'"}
    ws_id = submit(srcnet, body)
    seen = wait_final(srcnet, ws_id)
    states = [s["state"] for s in seen]
    order = ["queued", "pending", "running", "completed"]
    # Polling may miss short states, never reorder them.
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)
    assert states[-1] == "completed"
    # Polling can miss a short RUNNING under load; the status history cannot.
    history = srcnet.get(f"/api/v1/jobs/{ws_id}/events").json()["events"]
    assert "RUNNING" in [e["state"] for e in history]
    assert seen[0]["started_at"] is None or seen[0]["state"] != "queued"
    assert seen[-1]["started_at"] is not None
    assert all(s["started_at"] for s in seen if s["state"] in ("running", "completed"))

    # The same job through the native API: translated as documented.
    job = srcnet.get(f"/api/v1/jobs/{ws_id}").json()
    assert job["state"] == "COMPLETE"
    assert job["backend"] == "local"
    assert job["labels"] == {"srcnet.node": "CHSRC"}
    executor = job["spec"]["executors"][0]
    assert executor["image"] == "python:3.12-alpine"
    assert executor["command"] == ["/bin/sh", "-c", body["executable_entrypoint"]]
    assert job["spec"]["resources"] == {"cpu_cores": 1, "ram_gb": 2}
    assert job["logs"][-1]["logs"][0]["stdout"] == "Hello, World!\n"


def test_failure_and_cancel_states(srcnet: httpx.Client) -> None:
    failed = submit(srcnet, {**REQUEST, "executable_entrypoint": "exit 3"})
    assert wait_final(srcnet, failed)[-1]["state"] == "failed"

    long = submit(srcnet, {**REQUEST, "executable_entrypoint": "sleep 60"})
    assert srcnet.post(f"/api/v1/jobs/{long}/cancel").status_code == 200
    assert wait_final(srcnet, long)[-1]["state"] == "cancelled"


def test_second_node_and_a_single_string(srcnet: httpx.Client) -> None:
    params = {"src_node": "UKSRC", "cpu_cores": 2}
    ws_id = submit(srcnet, {**REQUEST, "system_parameters": params})
    echoed = srcnet.get(f"/v1/worksteps/{ws_id}").json()["system_parameters"]
    assert echoed == {**params, "src_node": ["UKSRC"]}  # normalised to the list form
    assert srcnet.get(f"/api/v1/jobs/{ws_id}").json()["labels"] == {"srcnet.node": "UKSRC"}


def test_unknown_node_is_a_400_naming_it(srcnet: httpx.Client) -> None:
    body = {**REQUEST, "system_parameters": {"src_node": ["CHSRC", "NOSUCH"]}}
    r = srcnet.post("/v1/worksteps", json=body)
    assert r.status_code == 400
    err = r.json()
    assert err["code"] == "invalid_request" and err["status"] == 400
    assert "NOSUCH" in err["message"] and "CHSRC" in err["message"]
    assert err["errors"][0]["where"] == "body.system_parameters.src_node[1]"


def test_without_configured_nodes_every_node_runs_locally(server: Server) -> None:
    body = {**REQUEST, "system_parameters": {"src_node": ["ANYSRC"]}}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ws_id = submit(client, body)
        assert client.get(f"/api/v1/jobs/{ws_id}").json()["backend"] == "local"
        assert wait_final(client, ws_id)[-1]["state"] == "completed"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"executable_entrypoint": "true"}, "body.container_image"),
        ({"container_image": "alpine"}, "body.executable_entrypoint"),
        ({**REQUEST, "executable_entrypoint": ""}, "body.executable_entrypoint"),
        ({**REQUEST, "execution": "interactive"}, "body.execution"),
        ({**REQUEST, "system_parameters": {"cpu_cores": 0}}, "body.system_parameters.cpu_cores"),
        ({**REQUEST, "system_parameters": {"memory_gb": -1}}, "body.system_parameters.memory_gb"),
        ({**REQUEST, "input_data": "s3://x"}, "body.input_data"),
        ([REQUEST], "body"),
    ],
)
def test_bad_input_is_a_400(srcnet: httpx.Client, body: Any, where: str) -> None:
    r = srcnet.post("/v1/worksteps", json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["code"] == "invalid_request"
    assert err["errors"][0]["where"] == where


def test_interactive_execution_says_why(srcnet: httpx.Client) -> None:
    r = srcnet.post("/v1/worksteps", json={**REQUEST, "execution": "interactive"})
    assert "only 'batch' execution is supported" in r.json()["message"]


def test_body_that_is_not_json_is_a_400(srcnet: httpx.Client) -> None:
    r = srcnet.post("/v1/worksteps", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_request"


def test_unknown_id_is_a_404(srcnet: httpx.Client) -> None:
    for ws_id in (str(uuid.uuid4()), "not-a-uuid"):
        r = srcnet.get(f"/v1/worksteps/{ws_id}")
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"


def test_idempotency_key_returns_the_first_answer(srcnet: httpx.Client) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = srcnet.post("/v1/worksteps", json=REQUEST, headers=headers)
    again = srcnet.post("/v1/worksteps", json=REQUEST, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_tes_task_reads_as_a_workstep(srcnet: httpx.Client, tmp_path: Path) -> None:
    task = {"executors": [{"image": "alpine", "command": ["echo", "a b"]}]}
    task_id = srcnet.post("/ga4gh/tes/v1/tasks", json=task).json()["id"]
    status = srcnet.get(f"/v1/worksteps/{task_id}").json()
    assert set(status) == STATUS_KEYS
    assert status["container_image"] == "alpine"
    assert status["executable_entrypoint"] == "echo 'a b'"


def test_status_is_consistent_when_the_job_moves_on_between_reads() -> None:
    # The record is read first, the history after: a job that started in between must
    # still read as queued, without a start time.
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def event(to: State, frm: State | None) -> JobEvent:
        return JobEvent(job_id="j", at=t, from_state=frm, to_state=to, source="test")

    history = [
        event(State.QUEUED, None),
        event(State.INITIALIZING, State.QUEUED),
        event(State.RUNNING, State.INITIALIZING),
    ]
    queued = JobRecord(id="j", state=State.QUEUED, spec={}, logs=None, created_at=t)
    view = status_view(queued, history)
    assert view["state"] == "queued" and view["started_at"] is None
    running = JobRecord(id="j", state=State.RUNNING, spec={}, logs=None, created_at=t)
    assert status_view(running, history)["started_at"] is not None
