"""The shortest path a new user takes: create a task, see it complete."""

from __future__ import annotations

import httpx

from tests.conftest import wait_final


def test_echo_task_completes_with_stdout(tes: httpx.Client) -> None:
    r = tes.post("/tasks", json={"executors": [{"image": "alpine", "command": ["echo", "hi"]}]})
    assert r.status_code == 200, r.text
    task = wait_final(tes, r.json()["id"])
    assert task["state"] == "COMPLETE"
    assert task["logs"][0]["logs"][0]["stdout"] == "hi\n"
    assert task["logs"][0]["logs"][0]["exit_code"] == 0
