"""The native jobs API (``/api/v1``) through real HTTP against the session's server.

Every test scopes itself with unique names and labels: the server is shared with the
other suites. Large submissions are held (PAUSED) so they never run.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.support import TERMINAL, assert_error, get_job, post_job, uid, wait_job

Job = dict[str, Any]
ALL_FIELDS = [
    "id",
    "state",
    "owner",
    "name",
    "backend",
    "group",
    "priority",
    "created_at",
    "updated_at",
    "reschedules",
    "attempt",
    "detail",
    "app_status",
    "labels",
]
SORTABLE = [
    "id",
    "state",
    "owner",
    "name",
    "backend",
    "group",
    "priority",
    "created_at",
    "updated_at",
    "reschedules",
    "attempt",
]


def events(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    r = api.get(f"/jobs/{job_id}/events")
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["events"]
    return out


def search(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post("/jobs/search", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def search_all(api: httpx.Client, body: dict[str, Any]) -> tuple[list[Job], int]:
    """Every page of a search, following ``next_cursor``; (jobs, number of pages)."""
    jobs: list[Job] = []
    pages = 0
    cursor = None
    while True:
        page = search(api, {**body, **({"cursor": cursor} if cursor else {})})
        pages += 1
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs, pages
        assert pages < 10_000


def summary(api: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = api.post("/jobs/summary", json=body)
    assert r.status_code == 200, r.text
    groups: list[dict[str, Any]] = r.json()["groups"]
    return groups


def b64(value: Any) -> str:
    """A hand-made cursor: base64 of JSON, as the server's look."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def label_is(key: str, value: str) -> dict[str, Any]:
    return {"field": f"labels.{key}", "op": "eq", "value": value}


def ids_with_label(api: httpx.Client, key: str, value: str) -> list[str]:
    jobs, _ = search_all(api, {"filters": [label_is(key, value)], "fields": ["id"], "limit": 1000})
    return [j["id"] for j in jobs]


# -- submission ------------------------------------------------------------------------------


def test_submit_json_returns_the_job_and_tes_sees_labels_as_tags(
    api: httpx.Client, tes: httpx.Client
) -> None:
    u = uid()
    r = api.post(
        "/jobs",
        json={
            "name": f"json-{u}",
            "script": "echo hi",
            "labels": {"project": u, "stage": "one"},
            "priority": 7,
            "backend": "local",
            "hold": True,
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "PAUSED"
    assert job["name"] == f"json-{u}"
    assert job["labels"] == {"project": u, "stage": "one"}
    assert job["priority"] == 7
    assert job["backend"] == "local"
    assert job["group"] is None
    assert job["reschedules"] == 0
    assert job["spec"]["script"] == "echo hi"
    assert job["spec"]["executors"][0]["command"] == ["/bin/sh", "-c", "echo hi"]
    assert get_job(api, job["id"]) == job
    # The same job through TES: labels are its tags, held is PAUSED.
    task = tes.get(f"/tasks/{job['id']}", params={"view": "BASIC"}).json()
    assert task["tags"] == {"project": u, "stage": "one"}
    assert task["state"] == "PAUSED"
    assert task["name"] == f"json-{u}"
    listed = tes.get("/tasks", params={"tag_key": "project", "tag_value": u}).json()["tasks"]
    assert [t["id"] for t in listed] == [job["id"]]
    # ... and a TES task's tags are native labels.
    tid = tes.post(
        "/tasks",
        json={
            "name": f"tes-{u}",
            "tags": {"project": f"tes-{u}"},
            "executors": [{"image": "alpine", "command": ["true"]}],
        },
    ).json()["id"]
    assert get_job(api, tid)["labels"] == {"project": f"tes-{u}"}
    assert ids_with_label(api, "project", f"tes-{u}") == [tid]


def test_submit_yaml_script_runs_to_completion(api: httpx.Client) -> None:
    u = uid()
    body = f"name: yaml-{u}\nscript: |\n  echo one-{u}\n  echo two\nlabels:\n  suite: '{u}'\n"
    r = api.post("/jobs", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["name"] == f"yaml-{u}"
    assert job["labels"] == {"suite": u}
    done = wait_job(api, job["id"], TERMINAL)
    assert done["state"] == "COMPLETE", done
    assert done["logs"][0]["logs"][0]["stdout"] == f"one-{u}\ntwo\n"
    assert done["attempt"] == 1


def test_submit_executors_run_in_order(api: httpx.Client) -> None:
    job = post_job(
        api,
        name=f"exec-{uid()}",
        executors=[
            {"image": "alpine", "command": ["echo", "first"]},
            {"image": "alpine", "command": ["/bin/sh", "-c", "echo second; exit 4"]},
        ],
    )
    done = wait_job(api, job["id"], TERMINAL)
    assert done["state"] == "EXECUTOR_ERROR"
    logs = done["logs"][0]["logs"]
    assert [(x["stdout"], x["exit_code"]) for x in logs] == [("first\n", 0), ("second\n", 4)]


def test_hold_keeps_a_job_paused_until_started(api: httpx.Client) -> None:
    job = post_job(api, name=f"held-{uid()}", script="echo started", hold=True)
    assert job["state"] == "PAUSED"
    time.sleep(1.2)  # more than two dispatcher polls: it must not be picked up
    assert get_job(api, job["id"])["state"] == "PAUSED"
    r = api.post(f"/jobs/{job['id']}/start")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": job["id"], "state": "QUEUED"}
    done = wait_job(api, job["id"], TERMINAL)
    assert done["state"] == "COMPLETE"
    assert done["logs"][0]["logs"][0]["stdout"] == "started\n"
    history = events(api, job["id"])
    assert [(e["from_state"], e["state"]) for e in history[:2]] == [
        (None, "PAUSED"),
        ("PAUSED", "QUEUED"),
    ]
    assert history[1]["source"] == "api" and history[1]["detail"] == "started"
    # Starting a job that is not held is a conflict.
    assert_error(api.post(f"/jobs/{job['id']}/start"), 409)
    assert_error(api.post(f"/jobs/{uid()}/start"), 404)


def test_priority_and_backend_routing(api: httpx.Client) -> None:
    u = uid()
    default = post_job(api, name=f"prio-{u}", script="true", hold=True)
    assert default["priority"] == 0 and default["backend"] == "local"
    low = post_job(api, name=f"prio-{u}", script="true", hold=True, priority=-1_000_000)
    assert low["priority"] == -1_000_000
    via_params = post_job(
        api,
        name=f"prio-{u}",
        script="true",
        hold=True,
        resources={"backend_parameters": {"backend": "local"}},
    )
    assert via_params["backend"] == "local"
    assert via_params["spec"]["resources"]["backend_parameters"] == {"backend": "local"}


@pytest.mark.parametrize(
    ("body", "ctype", "where"),
    [
        ("name: [unclosed\n", "application/yaml", "body"),
        ("{not json", "application/json", "body"),
        ('{"script": "true", "executors": [{"image": "a", "command": ["b"]}]}', None, "body"),
        ('{"name": "nothing to run"}', None, "body"),
        ('{"script": "true", "backend": "slurm-nowhere"}', None, "body.backend"),
        ('{"script": "true", "labels": {"": "empty key"}}', None, "body.labels"),
        ('{"script": "true", "labels": {"n": 1}}', None, "body.labels.n"),
        ('{"script": "true", "labels": ["a", "b"]}', None, "body.labels"),
        ("script: 'true'\nlabels: flat\n", "application/yaml", "body.labels"),
        ('{"script": "true", "priority": 1000001}', None, "body.priority"),
        ('{"script": "true", "priority": "high"}', None, "body.priority"),
        ('{"script": "true", "hold": "maybe"}', None, "body.hold"),
        (
            '{"script": "true", "resources": {"backend_parameters": {"backend": "nope"}}}',
            None,
            "body.resources.backend_parameters.backend",
        ),
        ('["a", "list"]', None, "body"),
        ('{"executors": [{"image": "a", "command": []}]}', None, "body.executors[0].command"),
    ],
    ids=[
        "invalid-yaml",
        "invalid-json",
        "script-and-executors",
        "neither",
        "unknown-backend",
        "empty-label-key",
        "label-not-string",
        "labels-a-list",
        "labels-a-string-yaml",
        "priority-too-high",
        "priority-not-int",
        "hold-not-bool",
        "unknown-backend-parameter",
        "not-an-object",
        "empty-command",
    ],
)
def test_bad_submissions_are_400_with_where_and_what(
    api: httpx.Client, body: str, ctype: str | None, where: str
) -> None:
    headers = {"content-type": ctype or "application/json"}
    before = search(api, {"limit": 1, "fields": ["id"]})["jobs"]
    r = api.post("/jobs", content=body.encode(), headers=headers)
    assert_error(r, 400, where)
    # Nothing was created.
    assert search(api, {"limit": 1, "fields": ["id"]})["jobs"] == before


# -- bulk ------------------------------------------------------------------------------------


def test_bulk_results_align_with_input_and_commit_only_valid_items(api: httpx.Client) -> None:
    u = uid()
    ok = {"script": "true", "hold": True, "labels": {"bulk": u}}
    items: list[Any] = [
        {**ok, "name": f"{u}-0"},
        {"name": f"{u}-1", "labels": {"bulk": u}},  # neither script nor executors
        {**ok, "name": f"{u}-2", "priority": 3},
        {**ok, "name": f"{u}-3", "backend": "nowhere"},
        {**ok, "name": f"{u}-4", "labels": {"bulk": u, "": "x"}},
        "not a job",
        {**ok, "name": f"{u}-6"},
    ]
    r = api.post("/jobs/bulk", json={"jobs": items})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(items)))
    valid = [0, 2, 6]
    assert body["succeeded"] == 3 and body["failed"] == 4
    for i, res in enumerate(results):
        if i in valid:
            assert res["state"] == "PAUSED" and "error" not in res, res
        else:
            assert "id" not in res, res
            err = res["error"]
            assert err["status"] == 400 and err["code"] == "invalid_request"
            assert all(e["where"].startswith(f"body.jobs[{i}]") for e in err["errors"]), err
    wheres = {i: [e["where"] for e in results[i]["error"]["errors"]] for i in (1, 3, 4)}
    assert wheres == {
        1: ["body.jobs[1]"],
        3: ["body.jobs[3].backend"],
        4: ["body.jobs[4].labels"],
    }
    # The valid ones are committed, with their own fields, and nothing else is.
    stored = {j["name"]: j for j in search_all(api, {"filters": [label_is("bulk", u)]})[0]}
    assert sorted(stored) == [f"{u}-0", f"{u}-2", f"{u}-6"]
    for i in valid:
        assert stored[f"{u}-{i}"]["id"] == results[i]["id"]
    assert stored[f"{u}-2"]["priority"] == 3


def test_bulk_accepts_a_plain_list_and_yaml(api: httpx.Client) -> None:
    u = uid()
    r = api.post("/jobs/bulk", json=[{"script": "true", "hold": True, "labels": {"b": u}}])
    assert r.status_code == 200, r.text
    assert r.json()["succeeded"] == 1
    yaml_body = (
        "jobs:\n"
        f"  - {{name: y1, script: 'true', hold: true, labels: {{b: '{u}'}}}}\n"
        f"  - {{name: y2, script: 'true', hold: true, labels: {{b: '{u}'}}}}\n"
    )
    r = api.post("/jobs/bulk", content=yaml_body, headers={"content-type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert [x["state"] for x in r.json()["results"]] == ["PAUSED", "PAUSED"]
    assert len(ids_with_label(api, "b", u)) == 3


@pytest.mark.parametrize("body", [{}, {"jobs": []}, [], {"jobs": "x"}, "a string"])
def test_bulk_without_a_list_of_jobs_is_400(api: httpx.Client, body: Any) -> None:
    assert_error(api.post("/jobs/bulk", json=body), 400, "body.jobs")


def test_bulk_submits_10000_held_jobs(api: httpx.Client) -> None:
    u = uid()
    items = [
        {"name": f"big-{u}-{i}", "script": f"echo {i}", "hold": True, "labels": {"big": u}}
        for i in range(10_000)
    ]
    t0 = time.perf_counter()
    r = api.post("/jobs/bulk", json={"jobs": items})
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["succeeded"] == 10_000 and body["failed"] == 0
    ids = [x["id"] for x in body["results"]]
    assert len(set(ids)) == 10_000
    assert elapsed < 30, f"10,000 held jobs took {elapsed:.1f} s"
    groups = summary(api, {"group_by": ["state", "labels.big"], "filters": [label_is("big", u)]})
    assert groups == [{"state": "PAUSED", "labels.big": u, "count": 10_000}]
    # Input order is kept: the 1234th result is the job named so.
    assert get_job(api, ids[1234])["name"] == f"big-{u}-1234"
    delete_all(api, ids)
    assert summary(api, {"group_by": ["state"], "filters": [label_is("big", u)]}) == []


def delete_all(api: httpx.Client, ids: list[str]) -> None:
    """Delete held jobs (bulk), so that large tests leave the shared server as it was."""
    for start in range(0, len(ids), 10_000):  # the most one request takes
        r = api.post("/jobs/delete", json={"ids": ids[start : start + 10_000]})
        assert r.status_code == 200, r.text
        assert r.json()["failed"] == 0, r.json()["results"][:3]


# -- parametric ------------------------------------------------------------------------------


def test_parametric_submits_10000_held_jobs_in_one_group(api: httpx.Client) -> None:
    u = uid()
    r = api.post(
        "/jobs/parametric",
        json={
            "job": {
                "name": f"sweep-{u}-{{{{ i }}}}-{{{{ s }}}}",
                "script": "echo {{ i }} {{ s }}",
                "hold": True,
                "labels": {"sweep": u},
            },
            "parameters": {"i": {"start": 0, "stop": 5000}, "s": ["a", "b"]},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    group = body["group"]
    assert body["succeeded"] == 10_000 and body["failed"] == 0
    ids = [x["id"] for x in body["results"]]
    groups = summary(
        api,
        {"group_by": ["group", "state"], "filters": [{"field": "group", "value": group}]},
    )
    assert groups == [{"group": group, "state": "PAUSED", "count": 10_000}]
    # Cartesian product, first parameter outermost: index 2*i + (s == "b").
    job = get_job(api, ids[2 * 4321 + 1])
    assert job["name"] == f"sweep-{u}-4321-b"
    assert job["labels"] == {"sweep": u, "param.i": "4321", "param.s": "b"}
    assert job["spec"]["script"] == "echo 4321 b"
    by_s = summary(
        api,
        {"group_by": ["labels.param.s"], "filters": [{"field": "group", "value": group}]},
    )
    assert sorted((g["labels.param.s"], g["count"]) for g in by_s) == [("a", 5000), ("b", 5000)]
    delete_all(api, ids)


def test_parametric_cap_is_10000_jobs(api: httpx.Client) -> None:
    u = uid()
    r = api.post(
        "/jobs/parametric",
        json={
            "job": {"script": "true", "hold": True, "labels": {"capped": u}},
            "parameters": {"i": {"stop": 10_001}},
        },
    )
    body = assert_error(r, 400, "body.parameters")
    assert "10001" in body["errors"][0]["what"] and "10000" in body["errors"][0]["what"]
    r = api.post(
        "/jobs/parametric",
        json={
            "job": {"script": "true", "hold": True, "labels": {"capped": u}},
            "parameters": {"a": list(range(101)), "b": {"start": 0, "stop": 200, "step": 2}},
        },
    )
    assert_error(r, 400, "body.parameters")
    assert ids_with_label(api, "capped", u) == []


def test_a_huge_range_is_refused_without_being_listed(api: httpx.Client) -> None:
    """A range is counted, not expanded: 10**30 values answer 400 at once."""
    job = {"script": "true", "hold": True}
    for parameters in (
        {"i": {"stop": 10**30}},
        {"i": {"stop": 10**12}, "j": {"stop": 10**12}},
    ):
        r = api.post("/jobs/parametric", json={"job": job, "parameters": parameters}, timeout=10)
        assert "the limit is 10000" in assert_error(r, 400, "body.parameters")["errors"][0]["what"]
    # An empty list among huge ranges: zero combinations, no job, and no listing either.
    r = api.post(
        "/jobs/parametric", json={"job": job, "parameters": {"i": {"stop": 10**30}, "e": []}}
    )
    assert r.status_code == 200 and r.json()["results"] == [], r.text


def test_parametric_placeholders_in_names_scripts_and_labels(api: httpx.Client) -> None:
    u = uid()
    r = api.post(
        "/jobs/parametric",
        json={
            "job": {
                "name": "pp-{{ n }}-{{s}}-" + u,
                "script": "echo n={{ n }} s={{s}} keep={{ other }} $((1+{{n}}))",
                "labels": {"suite": u, "key-{{ s }}": "v{{ n }}"},
                "priority": 2,
            },
            "parameters": {"n": {"start": 2, "stop": 9, "step": 3}, "s": ["x", "y"]},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["succeeded"] == 6
    ids = [x["id"] for x in body["results"]]
    combos = [(n, s) for n in (2, 5, 8) for s in ("x", "y")]
    for job_id, (n, s) in zip(ids, combos, strict=True):
        job = wait_job(api, job_id, TERMINAL)
        assert job["state"] == "COMPLETE", job
        assert job["name"] == f"pp-{n}-{s}-{u}"
        assert job["group"] == body["group"]
        assert job["priority"] == 2
        assert job["labels"] == {
            "suite": u,
            f"key-{s}": f"v{n}",
            "param.n": str(n),
            "param.s": s,
        }
        # Known placeholders are replaced; unknown ones are left for the script.
        stdout = job["logs"][0]["logs"][0]["stdout"]
        assert stdout == f"n={n} s={s} keep={{{{ other }}}} {1 + n}\n"
    # The param.* labels are searchable.
    found = search(
        api,
        {
            "filters": [
                label_is("suite", u),
                {"field": "labels.param.n", "op": "gt", "value": "3"},
            ],
            "sort": [{"field": "name", "direction": "asc"}],
            "fields": ["name"],
        },
    )["jobs"]
    assert [j["name"] for j in found] == [f"pp-{n}-{s}-{u}" for n in (5, 8) for s in ("x", "y")]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"job": {"script": "true"}, "parameters": {}}, "body.parameters"),
        ({"job": {"script": "true"}, "parameters": {"not-an-id": [1]}}, "body.parameters"),
        ({"job": {"script": "true"}, "parameters": {"i": {"stop": 3, "step": 0}}}, None),
        ({"parameters": {"i": [1]}}, "body.job"),
        ({"job": {"script": "true"}, "parameters": {"i": "abc"}}, None),
    ],
    ids=["no-parameters", "bad-name", "zero-step", "no-job", "values-not-a-list"],
)
def test_bad_parametric_requests_are_400(
    api: httpx.Client, body: dict[str, Any], where: str | None
) -> None:
    assert_error(api.post("/jobs/parametric", json=body), 400, where)


def test_parametric_items_that_expand_invalid_carry_errors(api: httpx.Client) -> None:
    u = uid()
    r = api.post(
        "/jobs/parametric",
        json={
            "job": {"script": "true", "hold": True, "backend": "{{ b }}", "labels": {"pe": u}},
            "parameters": {"b": ["local", "elsewhere", "local"]},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [("id" in x, "error" in x) for x in body["results"]] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    assert body["results"][1]["error"]["errors"][0]["where"] == "body.job[1].backend"
    assert len(ids_with_label(api, "pe", u)) == 2


# -- idempotency -----------------------------------------------------------------------------


def test_idempotent_retry_returns_the_first_response(api: httpx.Client) -> None:
    u = uid()
    key = f"key-{u}"
    job = {"name": f"idem-{u}", "script": "true", "hold": True, "labels": {"idem": u}}
    first = api.post("/jobs", json=job, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = api.post("/jobs", json=job, headers={"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert ids_with_label(api, "idem", u) == [first.json()["id"]]
    # The same key with a different body (or on another endpoint) is refused.
    other = api.post("/jobs", json={**job, "priority": 1}, headers={"Idempotency-Key": key})
    body = assert_error(other, 422)
    assert body["code"] == "idempotency_key_reused"
    bulk = api.post("/jobs/bulk", json={"jobs": [job]}, headers={"Idempotency-Key": key})
    assert_error(bulk, 422)
    assert ids_with_label(api, "idem", u) == [first.json()["id"]]


def test_idempotent_bulk_and_parametric_retries(api: httpx.Client) -> None:
    u = uid()
    jobs = {"jobs": [{"script": "true", "hold": True, "labels": {"ib": u}}] * 3}
    a = api.post("/jobs/bulk", json=jobs, headers={"Idempotency-Key": f"b-{u}"})
    b = api.post("/jobs/bulk", json=jobs, headers={"Idempotency-Key": f"b-{u}"})
    assert a.status_code == b.status_code == 200
    assert b.headers["idempotent-replayed"] == "true" and a.json() == b.json()
    par = {
        "job": {"script": "true", "hold": True, "labels": {"ib": u}},
        "parameters": {"i": [1, 2]},
    }
    c = api.post("/jobs/parametric", json=par, headers={"Idempotency-Key": f"p-{u}"})
    d = api.post("/jobs/parametric", json=par, headers={"Idempotency-Key": f"p-{u}"})
    assert c.json() == d.json() and d.headers["idempotent-replayed"] == "true"
    assert len(ids_with_label(api, "ib", u)) == 5


def test_idempotent_errors_are_replayed_too(api: httpx.Client) -> None:
    key = f"bad-{uid()}"
    first = api.post("/jobs", json={"name": "no script"}, headers={"Idempotency-Key": key})
    assert_error(first, 400, "body")
    again = api.post("/jobs", json={"name": "no script"}, headers={"Idempotency-Key": key})
    assert_error(again, 400, "body")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


def test_concurrent_retries_with_one_key_create_exactly_one_job(server: Server) -> None:
    u = uid()
    key = f"race-{u}"
    job = {"name": f"race-{u}", "script": "true", "hold": True, "labels": {"race": u}}
    n = 10
    barrier = threading.Barrier(n)

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as c:
            c.get("/jobs/warm-up")  # open the connection before the race
            barrier.wait()
            return c.post("/jobs", json=job, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(attempt, range(n)))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [r.text for r in responses]
    created = [r for r in responses if r.status_code == 201]
    assert created, statuses
    assert len({r.json()["id"] for r in created}) == 1
    fresh = [r for r in created if "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1  # one ran; any other 201 is a replay
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "conflict"
    with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as c:
        assert ids_with_label(c, "race", u) == [created[0].json()["id"]]
        # After the race, a retry is a plain replay.
        late = c.post("/jobs", json=job, headers={"Idempotency-Key": key})
        assert late.status_code == 201 and late.headers["idempotent-replayed"] == "true"


def test_idempotency_keys_are_distinct(api: httpx.Client) -> None:
    u = uid()
    job = {"script": "true", "hold": True, "labels": {"keys": u}}
    a = api.post("/jobs", json=job, headers={"Idempotency-Key": f"a-{u}"}).json()["id"]
    b = api.post("/jobs", json=job, headers={"Idempotency-Key": f"b-{u}"}).json()["id"]
    c = api.post("/jobs", json=job).json()["id"]
    d = api.post("/jobs", json=job).json()["id"]  # no key: no deduplication
    assert len({a, b, c, d}) == 4
    assert sorted(ids_with_label(api, "keys", u)) == sorted([a, b, c, d])


# -- search ----------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Jobs of one test module run, all labeled ``suite=<tag>``, in creation order."""

    tag: str
    jobs: list[Job]
    group: str

    @property
    def scope(self) -> dict[str, Any]:
        return label_is("suite", self.tag)

    def ids(self, pred: Callable[[Job], bool] = lambda j: True) -> set[str]:
        return {j["id"] for j in self.jobs if pred(j)}

    def scoped(self, how: str) -> tuple[dict[str, Any], Callable[[Job], bool]]:
        """A filter that selects (part of) the corpus, and which jobs it selects.

        By label, the server walks the label's index; by name pattern, the jobs table (the
        two take different query shapes)."""
        if how == "label":
            return self.scope, lambda j: True
        prefix = f"{self.tag}-"
        return (
            {"field": "name", "op": "like", "value": prefix + "*"},
            lambda j: j["name"] is not None and j["name"].startswith(prefix),
        )


SCOPES = ["label", "name"]


@pytest.fixture(scope="module")
def corpus(server: Server) -> Corpus:
    """22 jobs in PAUSED, CANCELED, COMPLETE and EXECUTOR_ERROR, some in one group."""
    u = uid()
    colors = ["red", "green", "blue", None]
    priorities = [5, -3, 0, 100, 5, 7, -1000, 0, 42, 1, 5, 9, -2, 3, 0, 8]
    with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
        items = []
        for i, prio in enumerate(priorities):
            labels = {"suite": u, "size": str(i * 7 % 12)}
            color = colors[i % 4]
            if color is not None:
                labels["color"] = color
            name = None if i == 5 else f"{u}-{'alpha' if i % 3 else 'Beta'}_{i:02d}"
            items.append(
                {
                    "name": name,
                    "script": "exit 2" if i == 3 else "true",
                    "hold": True,
                    "priority": prio,
                    "labels": labels,
                }
            )
        r = api.post("/jobs/bulk", json={"jobs": items})
        assert r.json()["failed"] == 0, r.text
        ids = [x["id"] for x in r.json()["results"]]
        r = api.post(
            "/jobs/parametric",
            json={
                "job": {
                    "name": f"{u}-param-{{{{ i }}}}",
                    "script": "true",
                    "hold": True,
                    "priority": 3,
                    "labels": {"suite": u, "color": "red"},
                },
                "parameters": {"i": {"stop": 6}},
            },
        )
        group = r.json()["group"]
        for i in (1, 6, 11):
            assert api.post(f"/jobs/{ids[i]}/cancel").json()["state"] == "CANCELED"
        for i in (0, 3, 9):
            assert api.post(f"/jobs/{ids[i]}/start").status_code == 200
        for i in (0, 3, 9):
            wait_job(api, ids[i], TERMINAL)
        jobs, _ = search_all(
            api,
            {
                "filters": [label_is("suite", u)],
                "sort": [{"field": "created_at", "direction": "asc"}],
                "fields": ALL_FIELDS,
                "limit": 1000,
            },
        )
    assert len(jobs) == 22
    assert Counter(j["state"] for j in jobs) == {
        "PAUSED": 16,
        "CANCELED": 3,
        "COMPLETE": 2,
        "EXECUTOR_ERROR": 1,
    }
    return Corpus(u, jobs, group)


def _value(job: Job, field: str) -> Any:
    if field.startswith("labels."):
        return job["labels"].get(field.removeprefix("labels."))
    if field in ("created_at", "updated_at"):
        return _time(job[field])
    return job[field]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _like(pattern: str) -> re.Pattern[str]:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rx, re.IGNORECASE | re.DOTALL)


def matches(job: Job, field: str, op: str, value: Any) -> bool:
    """The documented meaning of one filter; a missing label or NULL column is None."""
    v = _value(job, field)

    def conv(x: Any) -> Any:
        if x is None:
            return None
        if field in ("created_at", "updated_at"):
            return _time(str(x)).astimezone(UTC)
        if field == "priority":
            return int(x)
        return str(x)

    if op == "eq":
        return bool(v == conv(value))
    if op == "neq":
        return bool(v != conv(value))
    if op == "in":
        return v in [conv(x) for x in value]
    if op == "not_in":
        return v not in [conv(x) for x in value]
    if v is None:
        return False
    if op == "gt":
        return bool(v > conv(value))
    if op == "lt":
        return bool(v < conv(value))
    assert op == "like"
    return _like(value).fullmatch(str(v)) is not None


def _mid_time(c: Corpus, offset_hours: int = 0) -> str:
    """The creation time of the 10th job, written with a UTC offset of ``offset_hours``."""
    t = _time(c.jobs[10]["created_at"]).astimezone(timezone(timedelta(hours=offset_hours)))
    return t.isoformat()


FILTER_CASES: list[tuple[str, str, Callable[[Corpus], Any]]] = [
    # state
    ("state", "eq", lambda c: "PAUSED"),
    ("state", "neq", lambda c: "PAUSED"),
    ("state", "in", lambda c: ["COMPLETE", "EXECUTOR_ERROR"]),
    ("state", "in", lambda c: ["CANCELED", "PAUSED", "CANCELED"]),  # a value twice
    ("state", "not_in", lambda c: ["PAUSED", "CANCELED"]),
    ("state", "gt", lambda c: "COMPLETE"),
    ("state", "lt", lambda c: "EXECUTOR_ERROR"),
    ("state", "like", lambda c: "*ED"),
    # name (one job has none)
    ("name", "eq", lambda c: f"{c.tag}-alpha_04"),
    ("name", "neq", lambda c: f"{c.tag}-alpha_04"),
    ("name", "eq", lambda c: None),
    ("name", "neq", lambda c: None),
    ("name", "in", lambda c: [f"{c.tag}-Beta_00", f"{c.tag}-param-3", "absent"]),
    ("name", "in", lambda c: [f"{c.tag}-Beta_00", None]),
    ("name", "not_in", lambda c: [f"{c.tag}-Beta_00", f"{c.tag}-param-3"]),
    ("name", "gt", lambda c: f"{c.tag}-alpha_08"),
    ("name", "lt", lambda c: f"{c.tag}-alpha_08"),
    ("name", "like", lambda c: f"{c.tag}-beta*"),  # case-insensitive
    ("name", "like", lambda c: f"{c.tag}-alpha_1?"),  # '_' literal, '?' one character
    ("name", "like", lambda c: f"*{c.tag[3:9]}*param*"),
    # owner (no authentication: every job's owner is null)
    ("owner", "eq", lambda c: None),
    ("owner", "eq", lambda c: "alice"),
    ("owner", "neq", lambda c: "alice"),
    ("owner", "in", lambda c: ["alice", None]),
    ("owner", "in", lambda c: ["alice"]),
    ("owner", "not_in", lambda c: ["alice"]),
    ("owner", "not_in", lambda c: [None]),
    ("owner", "gt", lambda c: ""),
    ("owner", "like", lambda c: "*"),
    # backend
    ("backend", "eq", lambda c: "local"),
    ("backend", "neq", lambda c: "local"),
    ("backend", "in", lambda c: ["slurm", "local"]),
    ("backend", "not_in", lambda c: ["slurm"]),
    ("backend", "gt", lambda c: "a"),
    ("backend", "lt", lambda c: "a"),
    ("backend", "like", lambda c: "LOC*"),
    # group (the parametric jobs share one; the others have none)
    ("group", "eq", lambda c: c.group),
    ("group", "neq", lambda c: c.group),
    ("group", "eq", lambda c: None),
    ("group", "in", lambda c: [c.group, "other"]),
    ("group", "not_in", lambda c: [c.group]),
    ("group", "gt", lambda c: "0"),
    ("group", "lt", lambda c: "z"),
    ("group", "like", lambda c: c.group[:8] + "*"),
    # priority
    ("priority", "eq", lambda c: 5),
    ("priority", "eq", lambda c: "5"),
    ("priority", "neq", lambda c: 5),
    ("priority", "in", lambda c: [0, 42, -1000]),
    ("priority", "not_in", lambda c: [0, 3, 5]),
    ("priority", "gt", lambda c: 4),
    ("priority", "lt", lambda c: 0),
    ("priority", "gt", lambda c: -1001),
    # created_at (any RFC 3339 offset means the same instant)
    ("created_at", "gt", _mid_time),
    ("created_at", "lt", _mid_time),
    ("created_at", "gt", lambda c: _mid_time(c, 5)),
    ("created_at", "lt", lambda c: _mid_time(c, -7)),
    ("created_at", "eq", lambda c: c.jobs[3]["created_at"]),
    ("created_at", "eq", lambda c: _mid_time(c, 2)),
    ("created_at", "neq", lambda c: c.jobs[3]["created_at"]),
    ("created_at", "in", lambda c: [c.jobs[0]["created_at"], c.jobs[21]["created_at"]]),
    ("created_at", "not_in", lambda c: [c.jobs[0]["created_at"]]),
    # labels.<key> (a missing label is null)
    ("labels.color", "eq", lambda c: "red"),
    ("labels.color", "neq", lambda c: "red"),
    ("labels.color", "eq", lambda c: None),
    ("labels.color", "neq", lambda c: None),
    ("labels.color", "in", lambda c: ["green", "blue"]),
    ("labels.color", "in", lambda c: ["green", None]),
    ("labels.color", "not_in", lambda c: ["green", "blue"]),
    ("labels.color", "not_in", lambda c: ["red", None]),
    ("labels.color", "gt", lambda c: "green"),
    ("labels.color", "lt", lambda c: "green"),
    ("labels.color", "like", lambda c: "?R*"),
    ("labels.size", "gt", lambda c: "5"),  # label values compare as text
    ("labels.size", "lt", lambda c: "10"),
    ("labels.param.i", "in", lambda c: ["1", "4"]),
    ("labels.absent", "eq", lambda c: "x"),
    ("labels.absent", "neq", lambda c: "x"),
]


@pytest.mark.parametrize(
    ("field", "op", "make"),
    FILTER_CASES,
    ids=[f"{f}-{op}-{i}" for i, (f, op, _) in enumerate(FILTER_CASES)],
)
@pytest.mark.parametrize("scope", SCOPES)
def test_search_filters(
    api: httpx.Client,
    corpus: Corpus,
    scope: str,
    field: str,
    op: str,
    make: Callable[[Corpus], Any],
) -> None:
    value = make(corpus)
    within, selected = corpus.scoped(scope)
    body = {
        "filters": [within, {"field": field, "op": op, "value": value}],
        "fields": ["id"],
        "limit": 1000,
    }
    found = [j["id"] for j in search(api, body)["jobs"]]
    assert len(found) == len(set(found))
    assert set(found) == corpus.ids(lambda j: selected(j) and matches(j, field, op, value))


def test_search_filter_cases_are_discriminating(corpus: Corpus) -> None:
    """Most cases above select some but not all jobs (else they would prove little)."""
    partial = 0
    for field, op, make in FILTER_CASES:
        value = make(corpus)
        n = sum(matches(j, field, op, value) for j in corpus.jobs)
        partial += 0 < n < len(corpus.jobs)
    assert partial >= len(FILTER_CASES) * 2 // 3


def test_search_filters_combine_with_and(api: httpx.Client, corpus: Corpus) -> None:
    body = {
        "filters": [
            corpus.scope,
            {"field": "state", "value": "PAUSED"},
            {"field": "labels.color", "op": "in", "value": ["red", "blue"]},
            {"field": "priority", "op": "gt", "value": 0},
        ],
        "fields": ["id"],
    }
    expected = corpus.ids(
        lambda j: (
            j["state"] == "PAUSED"
            and j["labels"].get("color") in ("red", "blue")
            and j["priority"] > 0
        )
    )
    assert expected
    assert {j["id"] for j in search(api, body)["jobs"]} == expected


def oracle_sort(
    c: Corpus, sort: list[tuple[str, str]], selected: Callable[[Job], bool] = lambda j: True
) -> list[str]:
    """Ids ordered by ``sort`` then creation (in the last key's direction), like the server."""

    def key(field: str) -> Callable[[Job], Any]:
        if field in ("name", "owner", "group"):
            return lambda j: j[field] or ""
        return lambda j: _value(j, field)

    rows = list(c.jobs)  # creation order
    if sort[-1][1] == "desc":
        rows.reverse()
    for field, direction in reversed(sort):
        if field == "created_at":  # sorts as the creation sequence itself
            rows = sorted(c.jobs, key=c.jobs.index, reverse=direction == "desc")
            continue
        rows.sort(key=key(field), reverse=direction == "desc")
    return [j["id"] for j in rows if selected(j)]


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("field", SORTABLE)
def test_search_sorts_by_each_field(
    api: httpx.Client, corpus: Corpus, field: str, direction: str, scope: str
) -> None:
    within, selected = corpus.scoped(scope)
    body = {
        "filters": [within],
        "sort": [{"field": field, "direction": direction}],
        "fields": ["id"],
        "limit": 1000,
    }
    found = [j["id"] for j in search(api, body)["jobs"]]
    assert found == oracle_sort(corpus, [(field, direction)], selected)


@pytest.mark.parametrize(
    "sort",
    [
        None,  # the default: newest first
        [("state", "asc"), ("priority", "desc")],
        [("priority", "asc"), ("name", "desc")],
        [("group", "desc"), ("state", "asc"), ("created_at", "asc")],
        [("backend", "asc"), ("priority", "desc"), ("id", "asc")],
        [("name", "asc")],
        [("owner", "desc"), ("group", "asc"), ("priority", "desc")],
    ],
    ids=[
        "default",
        "state-priority",
        "priority-name",
        "group-state-created",
        "three-keys",
        "name-nulls-first",
        "nulls-last-then-nulls-first",
    ],
)
@pytest.mark.parametrize("scope", SCOPES)
def test_search_multi_key_sort_and_paging_without_gaps(
    api: httpx.Client, corpus: Corpus, sort: list[tuple[str, str]] | None, scope: str
) -> None:
    within, selected = corpus.scoped(scope)
    body: dict[str, Any] = {"filters": [within], "fields": ["id", "priority", "state"]}
    if sort is not None:
        body["sort"] = [{"field": f, "direction": d} for f, d in sort]
    expected = oracle_sort(corpus, sort or [("created_at", "desc")], selected)
    whole = [j["id"] for j in search(api, {**body, "limit": 1000})["jobs"]]
    assert whole == expected
    for size in (1, 4, 7, 11, 22, 50):
        paged, pages = search_all(api, {**body, "limit": size})
        assert [j["id"] for j in paged] == expected, size
        assert pages == -(-len(expected) // size), size  # no empty last page


def test_paging_is_stable_while_jobs_are_added(api: httpx.Client) -> None:
    u = uid()
    r = api.post(
        "/jobs/parametric",
        json={
            "job": {"script": "true", "hold": True, "labels": {"grow": u}},
            "parameters": {"i": {"stop": 10}},
        },
    )
    first = [x["id"] for x in r.json()["results"]]
    body = {"filters": [label_is("grow", u)], "fields": ["id"], "limit": 3}
    seen: list[str] = []
    page = search(api, body)
    while True:
        seen += [j["id"] for j in page["jobs"]]
        # New jobs arrive between pages: newest-first paging must neither repeat nor skip.
        post_job(api, script="true", hold=True, labels={"grow": u})
        if page["next_cursor"] is None:
            break
        page = search(api, {**body, "cursor": page["next_cursor"]})
    assert seen == list(reversed(first))


def test_search_by_a_common_label_in_another_order(api: httpx.Client) -> None:
    """A label on more jobs than the server looks up by index: the same answers."""
    u = uid()
    n = 20_500
    items = [
        {"script": "true", "hold": True, "priority": i % 7, "labels": {"common": u}}
        for i in range(n)
    ]
    ids = []
    for start in range(0, n, 10_000):
        r = api.post("/jobs/bulk", json={"jobs": items[start : start + 10_000]})
        assert r.json()["failed"] == 0
        ids += [x["id"] for x in r.json()["results"]]
    body = {
        "filters": [label_is("common", u), {"field": "priority", "op": "gt", "value": 4}],
        "sort": [{"field": "priority", "direction": "desc"}],
        "fields": ["id", "priority"],
        "limit": 1000,
    }
    found, pages = search_all(api, body)
    # priority 6 then 5, each newest first (the tie-break follows the last key's direction).
    expected = [ids[i] for p in (6, 5) for i in reversed(range(n)) if i % 7 == p]
    assert [j["id"] for j in found] == expected
    assert pages == -(-len(expected) // 1000)
    delete_all(api, ids)


def test_search_field_selection(api: httpx.Client, corpus: Corpus) -> None:
    body: dict[str, Any] = {"filters": [corpus.scope], "limit": 3}
    default = search(api, body)["jobs"]
    assert set(default[0]) == {
        "id",
        "state",
        "name",
        "owner",
        "backend",
        "group",
        "priority",
        "created_at",
        "updated_at",
        "detail",
        "labels",
    }
    only = search(api, {**body, "fields": ["id", "labels"]})["jobs"]
    assert [set(j) for j in only] == [{"id", "labels"}] * 3
    assert [j["id"] for j in only] == [j["id"] for j in default]
    assert all(j["labels"]["suite"] == corpus.tag for j in only)
    heavy = search(api, {**body, "fields": ["spec", "logs", "app_status", "reschedules"]})["jobs"]
    assert [set(j) for j in heavy] == [{"spec", "logs", "app_status", "reschedules"}] * 3
    assert heavy[0]["spec"]["executors"][0]["command"][0] == "/bin/sh"
    # created_at and updated_at are RFC 3339 in UTC.
    times = search(api, {**body, "fields": ["created_at", "updated_at"]})["jobs"]
    for j in times:
        assert j["created_at"].endswith("Z") and _time(j["created_at"]) <= _time(j["updated_at"])


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"filters": [{"field": "colour", "op": "eq", "value": "x"}]}, "body.filters[0].field"),
        ({"filters": [{"field": "labels.", "value": "x"}]}, "body.filters[0].field"),
        ({"filters": [{"field": "state", "op": "regex", "value": "x"}]}, "body.filters[0].op"),
        ({"filters": [{"field": "state", "op": "in", "value": "PAUSED"}]}, None),
        ({"filters": [{"field": "state", "op": "in", "value": []}]}, None),
        ({"filters": [{"field": "state", "op": "eq", "value": ["PAUSED"]}]}, None),
        ({"filters": [{"field": "priority", "op": "gt", "value": "high"}]}, "body"),
        ({"filters": [{"field": "priority", "value": 10**30}]}, "body"),
        ({"filters": [{"field": "priority", "op": "like", "value": "1*"}]}, "body"),
        ({"filters": [{"field": "created_at", "op": "gt", "value": "yesterday"}]}, "body"),
        ({"filters": [{"field": "name", "op": "gt", "value": None}]}, "body"),
        ({"filters": [{"field": "labels.x", "op": "like", "value": None}]}, "body"),
        ({"sort": [{"field": "colour"}]}, "body.sort[0].field"),
        ({"sort": [{"field": "labels.color"}]}, "body.sort[0].field"),
        ({"sort": [{"field": "name", "direction": "up"}]}, "body.sort[0].direction"),
        ({"sort": [{"field": "name"}] * 4}, "body.sort"),
        ({"fields": ["id", "password"]}, "body.fields"),
        ({"limit": 0}, "body.limit"),
        ({"limit": 10_001}, "body.limit"),
        ({"cursor": "not a cursor!"}, "body"),
        ({"cursor": b64({"a": 1})}, "body"),
        ({"cursor": b64([{"a": 1}])}, "body"),
        ({"cursor": b64({"k": ["seq:desc"], "v": [{}]})}, "body"),
        ({"cursor": b64({"k": ["seq:desc"], "v": [1e40]})}, "body"),
        ({"cursor": b64({"k": ["seq:desc"], "v": [10**30]})}, "body"),
        ({"cursor": b64({"k": ["seq:desc"], "v": [None]})}, "body"),
        ({"cursor": b64({"k": ["seq:desc"], "v": [1, 2]})}, "body"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "body"),
    ],
    ids=[
        "unknown-field",
        "empty-label",
        "unknown-op",
        "in-without-list",
        "in-empty-list",
        "eq-with-list",
        "priority-not-int",
        "priority-too-large",
        "like-on-int",
        "bad-time",
        "gt-null",
        "like-null-label",
        "sort-unknown",
        "sort-label",
        "sort-direction",
        "sort-too-many",
        "unknown-return-field",
        "limit-0",
        "limit-too-big",
        "cursor-garbage",
        "cursor-other-json",
        "cursor-list-of-dict",
        "cursor-dict-value",
        "cursor-float",
        "cursor-huge-int",
        "cursor-null",
        "cursor-too-long",
        "cursor-not-utf8",
    ],
)
def test_bad_searches_are_400(api: httpx.Client, body: dict[str, Any], where: str | None) -> None:
    assert_error(api.post("/jobs/search", json=body), 400, where)


def test_a_cursor_belongs_to_its_sort_order(api: httpx.Client, corpus: Corpus) -> None:
    base: dict[str, Any] = {"filters": [corpus.scope], "limit": 2}
    by_prio = search(api, {**base, "sort": [{"field": "priority"}]})["next_cursor"]
    by_name = search(api, {**base, "sort": [{"field": "name"}]})["next_cursor"]
    assert by_prio and by_name
    for cursor, sort in ((by_prio, "name"), (by_name, "priority"), (by_prio, "created_at")):
        r = api.post("/jobs/search", json={**base, "sort": [{"field": sort}], "cursor": cursor})
        body = assert_error(r, 400, "body")
        assert "sort order" in body["errors"][0]["what"]
    asc = [{"field": "priority", "direction": "asc"}]
    assert_error(api.post("/jobs/search", json={**base, "sort": asc, "cursor": by_prio}), 400)


def test_search_body_may_be_yaml(api: httpx.Client, corpus: Corpus) -> None:
    body = (
        f"filters:\n  - {{field: labels.suite, value: '{corpus.tag}'}}\n"
        "  - {field: state, op: in, value: [COMPLETE]}\nfields: [id]\n"
    )
    r = api.post("/jobs/search", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert {j["id"] for j in r.json()["jobs"]} == corpus.ids(lambda j: j["state"] == "COMPLETE")


# -- summary ---------------------------------------------------------------------------------


def expected_groups(c: Corpus, fields: list[str]) -> Counter[tuple[Any, ...]]:
    def val(j: Job, f: str) -> Any:
        return j["labels"].get(f[7:]) if f.startswith("labels.") else j[f]

    return Counter(tuple(val(j, f) for f in fields) for j in c.jobs)


@pytest.mark.parametrize(
    "fields",
    [
        ["state"],
        ["labels.color"],
        ["labels.suite"],
        ["state", "labels.color"],
        ["state", "priority", "group"],
        ["backend", "owner", "labels.size", "state"],
    ],
)
def test_summary_groups(api: httpx.Client, corpus: Corpus, fields: list[str]) -> None:
    groups = summary(api, {"group_by": fields, "filters": [corpus.scope]})
    for g in groups:
        assert set(g) == {*fields, "count"}
    got = Counter({tuple(g[f] for f in fields): g["count"] for g in groups})
    assert len(groups) == len(got)  # each group once
    assert got == expected_groups(corpus, fields)
    counts = [g["count"] for g in groups]
    assert counts == sorted(counts, reverse=True)  # largest first


def test_summary_by_state_matches_the_corpus(api: httpx.Client, corpus: Corpus) -> None:
    groups = summary(api, {"group_by": ["state"], "filters": [corpus.scope]})
    assert groups == [
        {"state": "PAUSED", "count": 16},
        {"state": "CANCELED", "count": 3},
        {"state": "COMPLETE", "count": 2},
        {"state": "EXECUTOR_ERROR", "count": 1},
    ]
    # A filter narrows it; the null group of a label is filterable too.
    no_color = summary(
        api,
        {"group_by": ["labels.color"], "filters": [corpus.scope, label_is_null("color")]},
    )
    assert no_color == [{"labels.color": None, "count": 4}]


def test_summary_of_one_label_over_every_job(api: httpx.Client, corpus: Corpus) -> None:
    """Without filters, a label's groups count every job; those without it are null."""
    total = sum(g["count"] for g in summary(api, {"group_by": ["state"]}))
    groups = summary(api, {"group_by": ["labels.suite"]})
    assert {"labels.suite": corpus.tag, "count": 22} in groups
    assert sum(g["count"] for g in groups) == total
    unlabeled = [g for g in groups if g["labels.suite"] is None]
    assert len(unlabeled) == 1 and unlabeled[0]["count"] == total - sum(
        g["count"] for g in groups if g["labels.suite"] is not None
    )
    counts = [g["count"] for g in groups]
    assert counts == sorted(counts, reverse=True)


def label_is_null(key: str) -> dict[str, Any]:
    return {"field": f"labels.{key}", "op": "eq", "value": None}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"group_by": []}, "body.group_by"),
        ({"group_by": ["spec"]}, "body.group_by"),
        ({"group_by": ["state"] * 5}, "body.group_by"),
        ({}, "body.group_by"),
        ({"group_by": ["state"], "filters": [{"field": "x", "value": 1}]}, None),
    ],
)
def test_bad_summaries_are_400(api: httpx.Client, body: dict[str, Any], where: str | None) -> None:
    assert_error(api.post("/jobs/summary", json=body), 400, where)


# -- status history --------------------------------------------------------------------------


def test_events_are_the_ordered_status_history(api: httpx.Client) -> None:
    job = post_job(api, name=f"ev-{uid()}", script="echo x")
    wait_job(api, job["id"], TERMINAL)
    history = events(api, job["id"])
    assert [e["state"] for e in history] == ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"]
    assert [e["from_state"] for e in history] == [None, "QUEUED", "INITIALIZING", "RUNNING"]
    assert [e["source"] for e in history] == ["api", "dispatcher", "dispatcher", "dispatcher"]
    assert history[0]["detail"] == "submitted"
    assert history[-1]["detail"] == get_job(api, job["id"])["detail"]
    seqs = [e["seq"] for e in history]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    times = [_time(e["at"]) for e in history]
    assert times == sorted(times)
    assert all(e["job_id"] == job["id"] for e in history)
    assert history[0]["at"] == job["created_at"]
    assert_error(api.get(f"/jobs/{uid()}/events"), 404)


def test_events_record_control_actions(api: httpx.Client) -> None:
    job = post_job(api, script="exit 1", hold=True)
    api.post(f"/jobs/{job['id']}/cancel")
    api.post(f"/jobs/{job['id']}/reschedule")
    wait_job(api, job["id"], {"EXECUTOR_ERROR"})
    history = events(api, job["id"])
    assert [(e["from_state"], e["state"], e["source"]) for e in history[:3]] == [
        (None, "PAUSED", "api"),
        ("PAUSED", "CANCELED", "api"),
        ("CANCELED", "QUEUED", "api"),
    ]
    assert history[0]["detail"] == "submitted (held)"
    assert history[1]["detail"] == "canceled by user"
    assert history[2]["detail"].startswith("rescheduled (1 of ")
    assert history[-1]["state"] == "EXECUTOR_ERROR" and "code 1" in history[-1]["detail"]


# -- control ---------------------------------------------------------------------------------


def test_cancel_held_running_and_final_jobs(api: httpx.Client) -> None:
    held = post_job(api, script="true", hold=True)
    r = api.post(f"/jobs/{held['id']}/cancel")
    assert r.status_code == 200 and r.json() == {"id": held["id"], "state": "CANCELED"}
    running = post_job(api, script="sleep 60")
    wait_job(api, running["id"], {"RUNNING"})
    r = api.post(f"/jobs/{running['id']}/cancel")
    assert r.json()["state"] in ("CANCELING", "CANCELED")
    assert wait_job(api, running["id"], TERMINAL)["state"] == "CANCELED"
    # Canceling a final job changes nothing.
    assert api.post(f"/jobs/{running['id']}/cancel").json()["state"] == "CANCELED"
    done = post_job(api, script="true")
    wait_job(api, done["id"], TERMINAL)
    assert api.post(f"/jobs/{done['id']}/cancel").json()["state"] == "COMPLETE"
    assert_error(api.post(f"/jobs/{uid()}/cancel"), 404)


def test_reschedule_runs_a_failed_job_again(api: httpx.Client) -> None:
    job = post_job(api, name=f"again-{uid()}", script="echo attempt; exit 3")
    first = wait_job(api, job["id"], TERMINAL)
    assert first["state"] == "EXECUTOR_ERROR" and first["reschedules"] == 0
    r = api.post(f"/jobs/{job['id']}/reschedule")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": job["id"], "state": "QUEUED"}
    second = wait_job(api, job["id"], TERMINAL)
    assert second["state"] == "EXECUTOR_ERROR"
    assert second["reschedules"] == 1
    assert len(second["logs"]) == 2  # one entry per run
    assert [log["logs"][0]["stdout"] for log in second["logs"]] == ["attempt\n", "attempt\n"]
    running = [e for e in events(api, job["id"]) if e["state"] == "RUNNING"]
    assert len(running) == 2
    api.post(f"/jobs/{job['id']}/reschedule")
    assert wait_job(api, job["id"], TERMINAL)["reschedules"] == 2


def test_reschedule_refuses_complete_active_and_unknown_jobs(api: httpx.Client) -> None:
    done = post_job(api, script="true")
    wait_job(api, done["id"], TERMINAL)
    assert "COMPLETE" in assert_error(api.post(f"/jobs/{done['id']}/reschedule"), 409)["message"]
    held = post_job(api, script="true", hold=True)
    assert_error(api.post(f"/jobs/{held['id']}/reschedule"), 409)
    assert get_job(api, held["id"])["state"] == "PAUSED"
    assert_error(api.post(f"/jobs/{uid()}/reschedule"), 404)


def test_delete_only_final_or_held_jobs_then_404(api: httpx.Client, tes: httpx.Client) -> None:
    u = uid()
    done = post_job(api, script="true", labels={"del": u})
    wait_job(api, done["id"], TERMINAL)
    running = post_job(api, script="sleep 60", labels={"del": u})
    wait_job(api, running["id"], {"RUNNING"})
    assert "cancel it first" in assert_error(api.delete(f"/jobs/{running['id']}"), 409)["message"]
    r = api.delete(f"/jobs/{done['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(api.get(f"/jobs/{done['id']}"), 404)
    assert_error(api.get(f"/jobs/{done['id']}/events"), 404)
    assert tes.get(f"/tasks/{done['id']}").status_code == 404
    assert_error(api.delete(f"/jobs/{done['id']}"), 404)
    held = post_job(api, script="true", hold=True, labels={"del": u})
    assert api.delete(f"/jobs/{held['id']}").status_code == 204
    assert ids_with_label(api, "del", u) == [running["id"]]
    api.post(f"/jobs/{running['id']}/cancel")
    wait_job(api, running["id"], TERMINAL)
    assert api.delete(f"/jobs/{running['id']}").status_code == 204
    assert ids_with_label(api, "del", u) == []


def test_patch_priority_labels_and_app_status(api: httpx.Client, tes: httpx.Client) -> None:
    u = uid()
    job = post_job(api, script="true", hold=True, labels={"pt": u, "keep": "1", "drop": "x"})
    r = api.patch(
        f"/jobs/{job['id']}",
        json={
            "priority": 42,
            "labels": {"drop": None, "new": "n", "keep": "2"},
            "app_status": "50%",
        },
    )
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["priority"] == 42
    assert patched["labels"] == {"pt": u, "keep": "2", "new": "n"}
    assert patched["app_status"] == "50%"
    assert patched["state"] == "PAUSED"
    assert get_job(api, job["id"]) == patched
    # Labels are tags for TES and searchable at once; the removed one is gone everywhere.
    assert tes.get(f"/tasks/{job['id']}", params={"view": "BASIC"}).json()["tags"] == {
        "pt": u,
        "keep": "2",
        "new": "n",
    }
    assert ids_with_label(api, "new", "n") and job["id"] in ids_with_label(api, "new", "n")
    assert job["id"] not in ids_with_label(api, "drop", "x")
    found = search(api, {"filters": [label_is("pt", u)], "fields": ["priority", "labels"]})
    assert found["jobs"] == [{"priority": 42, "labels": {"pt": u, "keep": "2", "new": "n"}}]
    # Removing every label leaves none; an empty patch changes nothing.
    r = api.patch(f"/jobs/{job['id']}", json={"labels": {"pt": None, "keep": None, "new": None}})
    assert r.json()["labels"] == {}
    assert "tags" not in tes.get(f"/tasks/{job['id']}", params={"view": "BASIC"}).json()
    assert api.patch(f"/jobs/{job['id']}", json={}).json()["priority"] == 42


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"priority": 10**30}, "body.priority"),
        ({"priority": 1_000_001}, "body.priority"),
        ({"priority": "high"}, "body.priority"),
        ({"labels": {"": "x"}}, "body.labels"),
        ({"labels": {"k": 5}}, "body.labels.k"),
        ({"labels": ["k"]}, "body.labels"),
    ],
)
def test_bad_patches_are_400(api: httpx.Client, body: dict[str, Any], where: str) -> None:
    job = post_job(api, script="true", hold=True, labels={"bp": "1"})
    assert_error(api.patch(f"/jobs/{job['id']}", json=body), 400, where)
    after = get_job(api, job["id"])
    assert after["priority"] == 0 and after["labels"] == {"bp": "1"}


def test_patch_unknown_job_is_404(api: httpx.Client) -> None:
    assert_error(api.patch(f"/jobs/{uid()}", json={"priority": 1}), 404)


# -- bulk control ----------------------------------------------------------------------------


def bulk(api: httpx.Client, action: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post(f"/jobs/{action}", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert [x["index"] for x in out["results"]] == list(range(len(body["ids"])))
    assert [x["id"] for x in out["results"]] == body["ids"]
    return out


def outcome(result: dict[str, Any]) -> str | int | None:
    """A result's state, or its error status."""
    if "error" in result:
        status: int = result["error"]["status"]
        return status
    state: str | None = result.get("state")
    return state


def test_bulk_start_and_cancel(api: httpx.Client) -> None:
    a = post_job(api, script="true", hold=True)["id"]
    b = post_job(api, script="true", hold=True)["id"]
    c = post_job(api, script="true", hold=True)["id"]
    missing = uid()
    out = bulk(api, "start", {"ids": [a, missing, b]})
    assert [outcome(x) for x in out["results"]] == ["QUEUED", 404, "QUEUED"]
    assert out["succeeded"] == 2 and out["failed"] == 1
    assert out["results"][1]["error"]["code"] == "not_found"
    for j in (a, b):
        assert wait_job(api, j, TERMINAL)["state"] == "COMPLETE"
    out = bulk(api, "start", {"ids": [a]})  # not held any more
    assert [outcome(x) for x in out["results"]] == [409]
    out = bulk(api, "cancel", {"ids": [c, a, missing]})
    assert [outcome(x) for x in out["results"]] == ["CANCELED", "COMPLETE", 404]
    assert get_job(api, c)["state"] == "CANCELED"


def test_bulk_reschedule(api: httpx.Client) -> None:
    failed = post_job(api, script="exit 5")["id"]
    done = post_job(api, script="true")["id"]
    canceled = post_job(api, script="true", hold=True)["id"]
    api.post(f"/jobs/{canceled}/cancel")
    for j in (failed, done):
        wait_job(api, j, TERMINAL)
    out = bulk(api, "reschedule", {"ids": [failed, done, uid(), canceled]})
    assert [outcome(x) for x in out["results"]] == ["QUEUED", 409, 404, "QUEUED"]
    assert out["succeeded"] == 2 and out["failed"] == 2
    assert wait_job(api, failed, TERMINAL)["reschedules"] == 1
    assert wait_job(api, canceled, TERMINAL)["state"] == "COMPLETE"


def test_bulk_delete(api: httpx.Client) -> None:
    done = post_job(api, script="true")["id"]
    held = post_job(api, script="true", hold=True)["id"]
    running = post_job(api, script="sleep 60")["id"]
    wait_job(api, done, TERMINAL)
    wait_job(api, running, {"RUNNING"})
    out = bulk(api, "delete", {"ids": [done, running, held, uid()]})
    assert [outcome(x) for x in out["results"]] == [None, 409, None, 404]
    assert out["succeeded"] == 2 and out["failed"] == 2
    assert api.get(f"/jobs/{done}").status_code == 404
    assert api.get(f"/jobs/{held}").status_code == 404
    assert get_job(api, running)["state"] == "RUNNING"
    api.post(f"/jobs/{running}/cancel")


def test_bulk_patch(api: httpx.Client) -> None:
    u = uid()
    a = post_job(api, script="true", hold=True, labels={"bpatch": u, "x": "1"})["id"]
    b = post_job(api, script="true", hold=True, labels={"bpatch": u})["id"]
    out = bulk(
        api, "patch", {"ids": [a, uid(), b], "priority": -5, "labels": {"x": None, "y": "2"}}
    )
    assert [outcome(x) for x in out["results"]] == ["PAUSED", 404, "PAUSED"]
    for j in (a, b):
        job = get_job(api, j)
        assert job["priority"] == -5 and job["labels"] == {"bpatch": u, "y": "2"}
    assert_error(
        api.post("/jobs/patch", json={"ids": [a], "priority": 10**7}), 400, "body.priority"
    )


@pytest.mark.parametrize("action", ["cancel", "reschedule", "start", "delete", "patch"])
def test_bulk_control_needs_ids(api: httpx.Client, action: str) -> None:
    assert_error(api.post(f"/jobs/{action}", json={"ids": []}), 400, "body.ids")
    assert_error(api.post(f"/jobs/{action}", json={}), 400, "body.ids")


# -- limits on a server of their own ---------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with small limits: 2 reschedules, parametric cap 5."""
    srv = Server(
        tmp_path_factory.mktemp("limited") / "data",
        {"JOBGATE_MAX_RESCHEDULES": "2", "JOBGATE_PARAMETRIC_CAP": "5"},
    ).start()
    yield srv
    srv.stop()


def test_reschedule_limit_is_a_409(limited: Server) -> None:
    with httpx.Client(base_url=limited.url + "/api/v1", timeout=60) as api:
        job = post_job(api, script="exit 1")["id"]
        for _ in (1, 2):
            wait_job(api, job, TERMINAL)
            r = api.post(f"/jobs/{job}/reschedule")
            assert r.status_code == 200, r.text
        final = wait_job(api, job, TERMINAL)
        assert final["reschedules"] == 2 and len(final["logs"]) == 3
        details = [e["detail"] for e in events(api, job) if e["source"] == "api"]
        assert details == ["submitted", "rescheduled (1 of 2)", "rescheduled (2 of 2)"]
        body = assert_error(api.post(f"/jobs/{job}/reschedule"), 409)
        assert "limit" in body["message"]
        assert get_job(api, job)["state"] == "EXECUTOR_ERROR"
        out = bulk(api, "reschedule", {"ids": [job]})
        assert [outcome(x) for x in out["results"]] == [409]


def test_configured_parametric_cap(limited: Server) -> None:
    with httpx.Client(base_url=limited.url + "/api/v1", timeout=60) as api:
        job = {"script": "true", "hold": True}
        ok = api.post("/jobs/parametric", json={"job": job, "parameters": {"i": [1, 2, 3, 4, 5]}})
        assert ok.status_code == 200 and ok.json()["succeeded"] == 5
        too_many = api.post(
            "/jobs/parametric", json={"job": job, "parameters": {"i": [1, 2, 3], "j": [1, 2]}}
        )
        assert "limit is 5" in assert_error(too_many, 400, "body.parameters")["errors"][0]["what"]
