"""One contract, every backend: the same TES tasks behave the same on local and on Slurm."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, wait_final, wait_state


@pytest.fixture(params=["local", "slurm"])
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A TES client whose tasks run on the parametrized backend."""
    name = "server" if request.param == "local" else "slurm_server"
    srv: Server = request.getfixturevalue(name)
    with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as c:
        yield c


def run(client: httpx.Client, task: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    r = client.post("/tasks", json=task)
    assert r.status_code == 200, r.text
    return wait_final(client, r.json()["id"], timeout=timeout)


def ex(script: str, **extra: Any) -> dict[str, Any]:
    return {"image": "debian", "command": ["sh", "-c", script], **extra}


def test_executors_run_in_order_with_their_output(client: httpx.Client) -> None:
    task = run(client, {"executors": [ex("echo one"), ex("echo two >&2")]})
    assert task["state"] == "COMPLETE"
    logs = task["logs"][0]["logs"]
    assert [(e["stdout"], e["stderr"], e["exit_code"]) for e in logs] == [
        ("one\n", "", 0),
        ("", "two\n", 0),
    ]


def test_a_failing_executor_stops_the_task_unless_ignored(client: httpx.Client) -> None:
    task = run(client, {"executors": [ex("exit 5", ignore_error=True), ex("exit 6"), ex("true")]})
    assert task["state"] == "EXECUTOR_ERROR"
    assert [e["exit_code"] for e in task["logs"][0]["logs"]] == [5, 6]


def test_inputs_outputs_workdir_env_and_stdout_file(
    client: httpx.Client, allowed_dir: Path
) -> None:
    out = allowed_dir / f"contract-{uuid.uuid4().hex}.txt"
    task = run(
        client,
        {
            "inputs": [{"path": "/data/in/a.txt", "content": "abc\n"}],
            "outputs": [{"path": "/data/out/result.txt", "url": out.as_uri()}],
            "executors": [
                ex(
                    'cat in/a.txt; echo "$WHO"; pwd',
                    workdir="/data",
                    env={"WHO": "contract"},
                    stdout="/data/out/result.txt",
                )
            ],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert out.read_text() == "abc\ncontract\n/data\n"
    assert task["logs"][0]["outputs"][0]["path"] == "/data/out/result.txt"


def test_cancel_a_running_task(client: httpx.Client) -> None:
    r = client.post("/tasks", json={"executors": [ex("sleep 300")]})
    job = r.json()["id"]
    wait_state(client, job, {"RUNNING"}, timeout=30)
    assert client.post(f"/tasks/{job}:cancel").status_code == 200
    assert wait_final(client, job, timeout=30)["state"] == "CANCELED"


def test_system_logs_and_metadata_name_the_backend(client: httpx.Client) -> None:
    task = run(client, {"executors": [ex("true")]})
    meta = task["logs"][0]["metadata"]
    assert meta["backend"] in ("local", "slurm")
    assert meta["attempt"] == "1"
