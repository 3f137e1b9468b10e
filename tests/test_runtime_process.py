"""The plain-process runtime through a real server: unisolated, and it says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, wait_final


@pytest.fixture(scope="module")
def process_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    allowed = tmp_path_factory.mktemp("proc-allowed")
    srv = Server(
        tmp_path_factory.mktemp("proc") / "data",
        {"JOBGATE_RUNTIME": "process", "JOBGATE_ALLOWED_DIRS": str(allowed)},
    ).start()
    yield srv, allowed
    srv.stop()


def test_process_runtime_is_reported_as_unisolated(
    process_server: tuple[Server, Path],
) -> None:
    srv, _ = process_server
    health = httpx.get(srv.url + "/healthz").json()
    assert health["backends"]["local"]["runtime"] == "process"
    assert health["backends"]["local"]["isolated"] == "false"
    assert "UNISOLATED" in srv.log()


def test_process_runtime_maps_paths_under_the_task_root(
    process_server: tuple[Server, Path],
) -> None:
    srv, allowed = process_server
    (allowed / "in.txt").write_text("payload")
    with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1") as tes:
        r = tes.post(
            "/tasks",
            json={
                "inputs": [{"path": "/data/in.txt", "url": (allowed / "in.txt").as_uri()}],
                "outputs": [{"path": "/data/out.txt", "url": (allowed / "out.txt").as_uri()}],
                "executors": [
                    {
                        "image": "none",
                        "workdir": "/data",
                        "command": ["sh", "-c", "tr a-z A-Z < in.txt > out.txt"],
                    }
                ],
            },
        )
        task = wait_final(tes, r.json()["id"])
    assert task["state"] == "COMPLETE", task
    assert task["logs"][0]["metadata"]["runtime"] == "process"
    assert (allowed / "out.txt").read_text() == "PAYLOAD"
