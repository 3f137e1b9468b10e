"""Validate without creating: the same checks and the same 400 body as create; nothing
is stored."""

from __future__ import annotations

import httpx

from tests.support import assert_error, sh_task, uid


def _count(api: httpx.Client, name: str) -> int:
    r = api.post("/jobs/search", json={"filters": [{"field": "name", "op": "eq", "value": name}]})
    assert r.status_code == 200, r.text
    return len(r.json()["jobs"])


def test_tes_validate_answers_the_decision_and_stores_nothing(
    tes: httpx.Client, api: httpx.Client
) -> None:
    name = f"v-{uid()}"
    task = {
        **sh_task("true"),
        "name": name,
        "resources": {
            "backend_parameters": {"retries": "2", "running_timeout": "60", "nonsense": "x"}
        },
    }
    r = tes.post("/tasks:validate", json=task)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is True
    assert body["backend"] == "local"
    assert "default backend" in body["reason"]
    assert body["lifecycle"]["retries"] == 2
    assert body["lifecycle"]["retry_on"] == ["PREEMPTED", "STALLED", "SYSTEM_ERROR"]
    assert body["lifecycle"]["timeouts"] == {"running": 60.0}
    assert body["ignored_backend_parameters"] == ["nonsense"]
    assert _count(api, name) == 0


def test_validate_gives_the_400_create_gives(tes: httpx.Client, api: httpx.Client) -> None:
    name = f"v-{uid()}"
    bad = {
        **sh_task("true"),
        "name": name,
        "resources": {"backend_parameters": {"retries": "9", "running_timeout": "99999"}},
    }
    checked = tes.post("/tasks:validate", json=bad)
    created = tes.post("/tasks", json=bad)
    where = "body.resources.backend_parameters"
    assert_error(checked, 400, f"{where}.retries")
    assert_error(checked, 400, f"{where}.running_timeout")
    assert checked.json() == created.json()
    # Native: the same for the native fields, and the model's own 400s.
    job = {"name": name, "script": "true", "retry": {"count": 1, "on": ["BOGUS"]}}
    checked = api.post("/jobs/validate", json=job)
    assert_error(checked, 400, "body.retry.on")
    assert checked.json() == api.post("/jobs", json=job).json()
    job = {"name": name, "script": "true", "backend": "nowhere", "timeouts": {"queued": -1}}
    checked = api.post("/jobs/validate", json=job)
    assert checked.status_code == 400
    assert checked.json() == api.post("/jobs", json=job).json()
    assert _count(api, name) == 0


def test_native_validate_warns_of_what_staging_would_refuse(api: httpx.Client) -> None:
    job = {
        "script": "true",
        "inputs": [{"url": "http://169.254.169.254/latest/meta-data", "path": "/in/a"}],
        "outputs": [{"url": "file:///etc/out", "path": "/out/b"}],
        "timeouts": {"queued": 30, "running": 5},
        "heartbeat_timeout": 7,
    }
    r = api.post("/jobs/validate", json=job)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["lifecycle"]["timeouts"] == {"queued": 30.0, "running": 5.0}
    assert body["lifecycle"]["heartbeat_timeout"] == 7.0
    wheres = {w["where"] for w in body["warnings"]}
    assert wheres == {"body.inputs[0].url", "body.outputs[0].url"}, body
