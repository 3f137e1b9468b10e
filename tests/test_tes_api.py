"""The TES v1.1 API as a client sees it: views, listing, paging, errors, service-info.

Everything goes over real HTTP to the session's ``jobgate serve`` subprocess. The server is
shared, so every test names and tags its tasks with a unique prefix and only looks at those.
"""

from __future__ import annotations

import copy
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.support import (
    EXECUTOR_LOG_FIELDS,
    TERMINAL,
    assert_error,
    assert_rfc3339,
    assert_tes_shape,
    create,
    run,
    sh,
    uid,
    wait_final,
)

# -- helpers ----------------------------------------------------------------------------


def list_ids(tes: httpx.Client, **params: Any) -> list[str]:
    """Ids of every task matching ``params``, following next_page_token to the end."""
    ids: list[str] = []
    token: str | None = None
    for _ in range(1000):
        query = {**params, **({"page_token": token} if token else {})}
        r = tes.get("/tasks", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [t["id"] for t in body["tasks"]]
        token = body.get("next_page_token")
        if not token:
            return ids
    raise AssertionError("paging never ended")


def wait_all_final(tes: httpx.Client, name_prefix: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = tes.get("/tasks", params={"name_prefix": name_prefix, "page_size": 2048}).json()
        if all(t["state"] in TERMINAL for t in tasks["tasks"]):
            return
        time.sleep(0.1)
    raise AssertionError(f"tasks {name_prefix}* not final after {timeout}s")


# -- views ------------------------------------------------------------------------------


def test_get_defaults_to_minimal_view(tes: httpx.Client) -> None:
    task_id = create(tes, {"name": f"min-{uid()}", "executors": [sh("echo hi")]})
    wait_final(tes, task_id)
    r = tes.get(f"/tasks/{task_id}")
    assert r.status_code == 200
    assert r.json() == {"id": task_id, "state": "COMPLETE"}
    assert tes.get(f"/tasks/{task_id}", params={"view": "MINIMAL"}).json() == r.json()


def test_unknown_view_is_400(tes: httpx.Client) -> None:
    task_id = create(tes, {"executors": [sh("true")]})
    assert_error(tes.get(f"/tasks/{task_id}", params={"view": "EVERYTHING"}), 400)
    assert_error(tes.get("/tasks", params={"view": "full-ish"}), 400)


def test_full_and_basic_views_of_a_rich_task(tes: httpx.Client, allowed_dir: Path) -> None:
    """FULL returns what was sent plus server fields; BASIC the same minus the four
    fields the spec excludes (executor stdout/stderr, input content, system_logs)."""
    name = f"views-{uid()}"
    sent: dict[str, Any] = {
        "name": name,
        "description": "every field a client can send",
        "inputs": [
            {
                "name": "greeting",
                "description": "inline",
                "path": "/data/in.txt",
                "content": "secret-content\n",
                "streamable": False,
            }
        ],
        "outputs": [
            {
                "name": "never",
                "description": "not produced: makes the task fail with a system log",
                "url": (allowed_dir / name / "never.txt").as_uri(),
                "path": "/data/never.txt",
            }
        ],
        "resources": {
            "cpu_cores": 1,
            "preemptible": False,
            "ram_gb": 1.5,
            "disk_gb": 2.0,
            "zones": ["zone-a"],
        },
        "executors": [
            sh("echo to-stdout; echo to-stderr >&2", env={"A": "b"}, ignore_error=False),
        ],
        "volumes": ["/vol"],
        "tags": {"project": "views", "empty": ""},
    }
    task_id = create(tes, sent)
    full = wait_final(tes, task_id)
    assert_tes_shape(full)
    assert full["state"] == "SYSTEM_ERROR"

    # FULL: everything sent comes back unchanged, plus id/state/logs/creation_time;
    # the server may only add the input/output `type` it found.
    assert set(full) == set(sent) | {"id", "state", "logs", "creation_time"}
    for key in ("name", "description", "resources", "executors", "volumes", "tags"):
        assert full[key] == sent[key], key
    assert full["inputs"] == [{**sent["inputs"][0], "type": "FILE"}]
    assert [{k: v for k, v in o.items() if k != "type"} for o in full["outputs"]] == sent["outputs"]
    created = assert_rfc3339(full["creation_time"])
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    (tlog,) = full["logs"]
    (elog,) = tlog["logs"]
    assert elog["stdout"] == "to-stdout\n"
    assert elog["stderr"] == "to-stderr\n"
    assert elog["exit_code"] == 0
    assert any("/data/never.txt" in line for line in tlog["system_logs"])

    # BASIC: exactly FULL without the excluded fields — nothing else may go missing.
    basic = tes.get(f"/tasks/{task_id}", params={"view": "BASIC"}).json()
    expected = copy.deepcopy(full)
    del expected["inputs"][0]["content"]
    del expected["logs"][0]["system_logs"]
    for e in expected["logs"][0]["logs"]:
        del e["stdout"], e["stderr"]
    assert basic == expected
    assert_tes_shape(basic)

    # The list endpoint renders the same views.
    for view, want in (("FULL", full), ("BASIC", basic), ("MINIMAL", None)):
        listed = tes.get("/tasks", params={"name_prefix": name, "view": view}).json()["tasks"]
        assert listed == [want or {"id": task_id, "state": "SYSTEM_ERROR"}], view
    default = tes.get("/tasks", params={"name_prefix": name}).json()["tasks"]
    assert default == [{"id": task_id, "state": "SYSTEM_ERROR"}]


def test_no_defaults_the_client_did_not_send(tes: httpx.Client) -> None:
    """Strict clients reject echoed defaults: a bare task comes back bare."""
    executor = {"image": "alpine", "command": ["echo", "bare"]}
    task_id = create(tes, {"executors": [executor]})
    queued = tes.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
    assert set(queued) <= {"id", "state", "executors", "creation_time", "logs"}
    full = wait_final(tes, task_id)
    assert_tes_shape(full)
    assert set(full) == {"id", "state", "executors", "logs", "creation_time"}
    assert full["executors"] == [executor]  # no ignore_error, env, workdir … added
    (tlog,) = full["logs"]
    assert "system_logs" not in tlog  # nothing to say: no empty list either
    assert tlog["outputs"] == []  # required by the spec
    assert set(tlog["logs"][0]) <= EXECUTOR_LOG_FIELDS


def test_server_fills_io_type_but_adds_nothing_else(tes: httpx.Client, allowed_dir: Path) -> None:
    name = f"filltype-{uid()}"
    inp = {"path": "/data/in.txt", "content": "x"}
    out = {"path": "/data/in.txt", "url": (allowed_dir / name / "copy.txt").as_uri()}
    full = run(tes, {"name": name, "inputs": [inp], "outputs": [out], "executors": [sh("true")]})
    assert full["state"] == "COMPLETE", full
    assert full["inputs"] == [{**inp, "type": "FILE"}]
    assert full["outputs"] == [{**out, "type": "FILE"}]
    (olog,) = full["logs"][0]["outputs"]
    assert olog == {"url": out["url"], "path": "/data/in.txt", "size_bytes": "1"}


# -- listing: name_prefix, state, tags -------------------------------------------------


def test_name_prefix_is_a_plain_prefix_not_a_pattern(tes: httpx.Client) -> None:
    p = f"np-{uid()}"
    names = {
        "dot": f"{p}.x",
        "not_dot": f"{p}Zx",  # a regex '.' would match this
        "pct": f"{p}%y",
        "not_pct": f"{p}abc",  # a LIKE '%' would match this
        "under": f"{p}_z",
        "not_under": f"{p}Qz",  # a LIKE '_' would match this
        "bracket": f"{p}[ab]*",
        "not_bracket": f"{p}a",  # a glob '[ab]' would match this
        "unicode": f"{p}éü",
    }
    ids = {k: create(tes, {"name": n, "executors": [sh("true")]}) for k, n in names.items()}
    create(tes, {"executors": [sh("true")]})  # no name: never matched by a prefix

    def found(prefix: str) -> set[str]:
        return set(list_ids(tes, name_prefix=prefix))

    assert found(p) == set(ids.values())
    assert found(f"{p}.") == {ids["dot"]}
    assert found(f"{p}%") == {ids["pct"]}
    assert found(f"{p}_") == {ids["under"]}
    assert found(f"{p}[") == {ids["bracket"]}
    assert found(f"{p}[ab]*") == {ids["bracket"]}
    assert found(f"{p}é") == {ids["unicode"]}
    assert found(f"{p}.x") == {ids["dot"]}  # the whole name is a prefix of itself
    assert found(f"{p}.xy") == set()
    assert found(f"{p}Z") == {ids["not_dot"]}
    wait_all_final(tes, p)


def test_state_filter(tes: httpx.Client) -> None:
    p = f"state-{uid()}"
    ok = create(tes, {"name": f"{p}-ok", "executors": [sh("true")]})
    bad = create(tes, {"name": f"{p}-bad", "executors": [sh("exit 1")]})
    wait_final(tes, ok)
    wait_final(tes, bad)
    assert list_ids(tes, name_prefix=p, state="COMPLETE") == [ok]
    assert list_ids(tes, name_prefix=p, state="EXECUTOR_ERROR") == [bad]
    assert list_ids(tes, name_prefix=p, state="QUEUED") == []
    assert set(list_ids(tes, name_prefix=p)) == {ok, bad}
    assert_error(tes.get("/tasks", params={"state": "DONE"}), 400)


def test_tag_filters_follow_the_spec_table(tes: httpx.Client) -> None:
    """Every row of the tag-matching table in the spec's ListTasks description."""
    u = uid()
    foo, baz = f"foo-{u}", f"baz-{u}"
    tagsets: dict[str, dict[str, str]] = {
        "foo_bar": {foo: "bar"},
        "foo_bat": {foo: "bat"},
        "foo_empty": {foo: ""},
        "foo_bar_baz_bat": {foo: "bar", baz: "bat"},
        "none": {},
        "other": {f"other-{u}": "bar"},
    }
    ids = {
        k: create(tes, {"name": f"tags-{u}-{k}", "tags": t, "executors": [sh("true")]})
        for k, t in tagsets.items()
    }

    def matched(*pairs: tuple[str, str | None]) -> set[str]:
        params: list[tuple[str, str]] = [("tag_key", k) for k, _ in pairs]
        params += [("tag_value", v) for _, v in pairs if v is not None]
        r = tes.get("/tasks", params=params)
        assert r.status_code == 200, r.text
        mine = set(ids.values())
        return {t["id"] for t in r.json()["tasks"]} & mine

    # {"foo": "bar"} matches {"foo": "bar"} and {"foo": "bar", "baz": "bat"}, not "bat".
    assert matched((foo, "bar")) == {ids["foo_bar"], ids["foo_bar_baz_bat"]}
    # {"foo": "bar", "baz": "bat"} matches only the task that has both.
    assert matched((foo, "bar"), (baz, "bat")) == {ids["foo_bar_baz_bat"]}
    # {"foo": ""} (key alone) matches any value of foo, including "", but not a task without foo.
    any_foo = {ids["foo_bar"], ids["foo_bat"], ids["foo_empty"], ids["foo_bar_baz_bat"]}
    assert matched((foo, None)) == any_foo
    assert matched((foo, "")) == any_foo  # an explicit empty tag_value is the same
    # Values are exact: no prefix or case folding.
    assert matched((foo, "ba")) == set()
    assert matched((foo, "BAR")) == set()
    # A key nobody has matches nothing.
    assert matched((f"absent-{u}", None)) == set()
    # tag_value zips with tag_key in order; a missing trailing value means "any value".
    params = [("tag_key", baz), ("tag_key", foo), ("tag_value", "bat")]
    r = tes.get("/tasks", params=params)
    assert {t["id"] for t in r.json()["tasks"]} == {ids["foo_bar_baz_bat"]}
    wait_all_final(tes, f"tags-{u}")


# -- listing: paging -------------------------------------------------------------------


def test_paging_walks_every_task_newest_first(tes: httpx.Client) -> None:
    p = f"page-{uid()}"
    created = [create(tes, {"name": f"{p}-{i}", "executors": [sh("true")]}) for i in range(5)]
    newest_first = created[::-1]

    pages: list[list[str]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"name_prefix": p, "page_size": 2}
        if token:
            params["page_token"] = token
        body = tes.get("/tasks", params=params).json()
        pages.append([t["id"] for t in body["tasks"]])
        token = body.get("next_page_token")
        if token is None:
            assert "next_page_token" not in body  # absent, not null or ""
            break
        assert isinstance(token, str) and token
        assert len(pages) < 10
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]

    # A page that ends exactly at the last task carries no token (no empty extra page).
    body = tes.get("/tasks", params={"name_prefix": p, "page_size": 5}).json()
    assert [t["id"] for t in body["tasks"]] == newest_first
    assert "next_page_token" not in body
    body = tes.get("/tasks", params={"name_prefix": p, "page_size": 4}).json()
    body = tes.get(
        "/tasks", params={"name_prefix": p, "page_size": 4, "page_token": body["next_page_token"]}
    ).json()
    assert [t["id"] for t in body["tasks"]] == newest_first[4:]
    assert "next_page_token" not in body

    # Keyset paging: tasks created while a client pages do not shift later pages.
    body = tes.get("/tasks", params={"name_prefix": p, "page_size": 2}).json()
    late = create(tes, {"name": f"{p}-late", "executors": [sh("true")]})
    rest = list_ids(tes, name_prefix=p, page_size=2, page_token=body["next_page_token"])
    assert rest == newest_first[2:]
    assert list_ids(tes, name_prefix=p, page_size=2) == [late, *newest_first]
    wait_all_final(tes, p)


def test_default_page_size_is_256(tes: httpx.Client) -> None:
    p = f"many-{uid()}"
    # Tasks whose input cannot be fetched fail at staging: cheap, and no process runs.
    task = {"inputs": [{"url": "gs://bucket/key", "path": "/data/x"}], "executors": [sh("true")]}
    created = {create(tes, {**task, "name": f"{p}-{i:03d}"}) for i in range(257)}
    first = tes.get("/tasks", params={"name_prefix": p}).json()
    assert len(first["tasks"]) == 256
    assert "next_page_token" in first
    second = tes.get(
        "/tasks", params={"name_prefix": p, "page_token": first["next_page_token"]}
    ).json()
    assert len(second["tasks"]) == 1
    assert "next_page_token" not in second
    assert {t["id"] for t in first["tasks"] + second["tasks"]} == created
    # The largest allowed page holds them all.
    big = tes.get("/tasks", params={"name_prefix": p, "page_size": 2048}).json()
    assert len(big["tasks"]) == 257 and "next_page_token" not in big
    wait_all_final(tes, p)


@pytest.mark.parametrize("page_size", ["0", "-1", "2049", "100000", "abc", "1.5"])
def test_invalid_page_size_is_400(tes: httpx.Client, page_size: str) -> None:
    body = assert_error(tes.get("/tasks", params={"page_size": page_size}), 400)
    assert any("page_size" in e["where"] for e in body["errors"]), body


def test_page_size_bounds_are_accepted(tes: httpx.Client) -> None:
    for size in ("1", "2048"):
        assert tes.get("/tasks", params={"page_size": size}).status_code == 200


@pytest.mark.parametrize("token", ["garbage", "%%%", "czEyeA", "eDU", "!"])
def test_bad_page_token_is_400(tes: httpx.Client, token: str) -> None:
    # "czEyeA" is base64 of "s12x", "eDU" of "x5": well-formed base64, not our tokens.
    body = assert_error(tes.get("/tasks", params={"page_token": token}), 400)
    assert any("page_token" in e["where"] for e in body["errors"]), body


# -- creating: validation ---------------------------------------------------------------

EX = {"image": "alpine", "command": ["true"]}
BAD_TASKS: list[tuple[str, Any, str]] = [
    ("no executors", {}, "executors"),
    ("empty executors", {"executors": []}, "executors"),
    ("empty command", {"executors": [{"image": "a", "command": []}]}, "executors[0].command"),
    ("no command", {"executors": [{"image": "a"}]}, "executors[0].command"),
    ("no image", {"executors": [{"command": ["true"]}]}, "executors[0].image"),
    ("command not a list", {"executors": [{"image": "a", "command": "echo hi"}]}, "command"),
    ("executors not a list", {"executors": {"image": "a", "command": ["true"]}}, "executors"),
    (
        "relative input path",
        {"inputs": [{"path": "data/x", "content": "x"}], "executors": [EX]},
        "inputs[0].path",
    ),
    (
        "dot-dot input path",
        {"inputs": [{"path": "/data/../etc/x", "content": "x"}], "executors": [EX]},
        "inputs[0].path",
    ),
    (
        "dot-dot output path",
        {"outputs": [{"path": "/data/../../x", "url": "file:///tmp/x"}], "executors": [EX]},
        "outputs[0].path",
    ),
    ("input without url or content", {"inputs": [{"path": "/x"}], "executors": [EX]}, "inputs[0]"),
    ("output without url", {"outputs": [{"path": "/data/x"}], "executors": [EX]}, "outputs[0].url"),
    (
        "wildcard output without path_prefix",
        {"outputs": [{"path": "/data/*.txt", "url": "file:///tmp/o"}], "executors": [EX]},
        "outputs[0]",
    ),
    (
        "relative workdir",
        {"executors": [{**EX, "workdir": "data"}]},
        "executors[0].workdir",
    ),
    ("relative stdout", {"executors": [{**EX, "stdout": "out.txt"}]}, "executors[0].stdout"),
    ("relative stdin", {"executors": [{**EX, "stdin": "in.txt"}]}, "executors[0].stdin"),
    ("relative volume", {"volumes": ["vol"], "executors": [EX]}, "volumes"),
    ("bad env name", {"executors": [{**EX, "env": {"A=B": "x"}}]}, "executors[0].env"),
    (
        "cpu_cores not a number",
        {"resources": {"cpu_cores": "many"}, "executors": [EX]},
        "cpu_cores",
    ),
    ("cpu_cores zero", {"resources": {"cpu_cores": 0}, "executors": [EX]}, "cpu_cores"),
    ("negative ram", {"resources": {"ram_gb": -1}, "executors": [EX]}, "ram_gb"),
    ("tag value not a string", {"tags": {"a": 1}, "executors": [EX]}, "tags"),
    ("name not a string", {"name": ["x"], "executors": [EX]}, "name"),
    ("body is a list", [{"executors": [EX]}], "body"),
]


@pytest.mark.parametrize(
    ("body", "where"), [c[1:] for c in BAD_TASKS], ids=[c[0] for c in BAD_TASKS]
)
def test_bad_task_is_400_naming_the_field(tes: httpx.Client, body: Any, where: str) -> None:
    name = f"bad-{uid()}"
    if isinstance(body, dict) and "name" not in body:
        body = {**body, "name": name}
    err = assert_error(tes.post("/tasks", json=body), 400)
    assert err["errors"], err
    assert any(where in e["where"] for e in err["errors"]), err
    assert list_ids(tes, name_prefix=name) == []  # nothing was stored


def test_oversized_inline_content_is_400(tes: httpx.Client) -> None:
    task = {"inputs": [{"path": "/data/x", "content": "x" * (1024 * 1024 + 1)}], "executors": [EX]}
    err = assert_error(tes.post("/tasks", json=task), 400)
    assert any(e["where"].endswith("inputs[0].content") for e in err["errors"]), err


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"executors": [}'])
def test_invalid_json_is_400(tes: httpx.Client, raw: bytes) -> None:
    r = tes.post("/tasks", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400)


def test_unknown_fields_are_ignored_not_echoed(tes: httpx.Client) -> None:
    """Clients of other TES versions send extra fields: accepted, and not stored."""
    task_id = create(
        tes,
        {
            "executors": [{**EX, "privileged": True}],
            "some_future_field": {"x": 1},
            "id": "client-chosen",
            "state": "COMPLETE",
        },
    )
    assert task_id != "client-chosen"
    full = wait_final(tes, task_id)
    assert_tes_shape(full)
    assert full["executors"] == [EX]


# -- unknown ids ------------------------------------------------------------------------


def test_unknown_task_is_404_json(tes: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    body = assert_error(tes.get(f"/tasks/{missing}"), 404)
    assert missing in body["message"]
    assert_error(tes.get(f"/tasks/{missing}", params={"view": "FULL"}), 404)
    assert_error(tes.post(f"/tasks/{missing}:cancel"), 404)


# -- backend_parameters -----------------------------------------------------------------


def test_unsupported_backend_parameters_are_dropped(tes: httpx.Client) -> None:
    task_id = create(
        tes,
        {
            "resources": {"backend_parameters": {"VmSize": "Standard_D64_v3", "backend": "local"}},
            "executors": [sh("echo ran")],
        },
    )
    full = wait_final(tes, task_id)
    assert_tes_shape(full)
    assert full["state"] == "COMPLETE"  # not strict: the task still runs
    assert full["resources"]["backend_parameters"] == {"backend": "local"}
    assert "VmSize" not in str(tes.get(f"/tasks/{task_id}", params={"view": "BASIC"}).json())


def test_only_unsupported_backend_parameters_still_runs(tes: httpx.Client) -> None:
    full = run(tes, {"resources": {"backend_parameters": {"gpu": "a100"}}, "executors": [EX]})
    assert full["state"] == "COMPLETE"
    assert "gpu" not in full.get("resources", {}).get("backend_parameters", {})
    # The spec asks for a system warning about the dropped key (FULL view only).
    assert any("gpu" in line for line in full["logs"][0]["system_logs"])


def test_strict_backend_parameters_refuse_unsupported_keys(tes: httpx.Client) -> None:
    name = f"strict-{uid()}"
    r = tes.post(
        "/tasks",
        json={
            "name": name,
            "resources": {
                "backend_parameters": {"VmSize": "big", "backend": "local"},
                "backend_parameters_strict": True,
            },
            "executors": [EX],
        },
    )
    body = assert_error(r, 400)
    (err,) = body["errors"]
    assert "backend_parameters" in err["where"]
    assert "VmSize" in err["what"]
    assert list_ids(tes, name_prefix=name) == []


def test_strict_backend_parameters_with_supported_keys_run(tes: httpx.Client) -> None:
    resources = {"backend_parameters": {"backend": "local"}, "backend_parameters_strict": True}
    full = run(tes, {"resources": resources, "executors": [EX]})
    assert full["state"] == "COMPLETE"
    assert full["resources"] == resources


def test_backend_parameter_keys_are_case_insensitive(tes: httpx.Client) -> None:
    resources = {"backend_parameters": {"Backend": "local"}, "backend_parameters_strict": True}
    full = run(tes, {"resources": resources, "executors": [EX]})
    assert full["state"] == "COMPLETE"


def test_unknown_backend_is_400(tes: httpx.Client) -> None:
    r = tes.post(
        "/tasks",
        json={"resources": {"backend_parameters": {"backend": "nope"}}, "executors": [EX]},
    )
    body = assert_error(r, 400)
    assert any("backend" in e["where"] and "nope" in e["what"] for e in body["errors"]), body


# -- service-info and legacy paths -------------------------------------------------------


def _check_service_info(info: dict[str, Any], allowed_dir: Path) -> None:
    assert isinstance(info["id"], str) and info["id"]
    assert isinstance(info["name"], str) and info["name"]
    assert info["type"]["artifact"] == "tes"
    assert info["type"]["group"] == "org.ga4gh"
    assert info["type"]["version"].startswith("1.1")
    assert isinstance(info["organization"]["name"], str)
    assert isinstance(info["organization"]["url"], str)
    assert isinstance(info["version"], str) and info["version"]
    assert isinstance(info["storage"], list)
    assert all(isinstance(s, str) for s in info["storage"])
    assert allowed_dir.resolve().as_uri() in info["storage"]
    assert "backend" in info["tesResources_backend_parameters"]


def test_service_info(tes: httpx.Client, allowed_dir: Path) -> None:
    r = tes.get("/service-info")
    assert r.status_code == 200
    _check_service_info(r.json(), allowed_dir)


def test_legacy_paths(server: Server, allowed_dir: Path) -> None:
    """Old clients (TES 1.0 era, e.g. Funnel-style) use /v1/tasks and /v1/tasks/service-info."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get("/v1/service-info")
        assert r.status_code == 200, r.text
        _check_service_info(r.json(), allowed_dir)
        legacy = c.get("/v1/tasks/service-info").json()
        assert set(legacy) == {"name", "doc", "storage"}
        assert allowed_dir.resolve().as_uri() in legacy["storage"]
        name = f"legacy-{uid()}"
        r = c.post("/v1/tasks", json={"name": name, "executors": [sh("echo legacy")]})
        assert r.status_code == 200, r.text
        task_id = r.json()["id"]
        listed = c.get("/v1/tasks", params={"name_prefix": name}).json()
        assert [t["id"] for t in listed["tasks"]] == [task_id]
        deadline = time.monotonic() + 30
        while (t := c.get(f"/v1/tasks/{task_id}", params={"view": "FULL"}).json())[
            "state"
        ] not in TERMINAL:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert t["state"] == "COMPLETE"
        assert t["logs"][0]["logs"][0]["stdout"] == "legacy\n"
        # The same task is visible on the current path.
        got = c.get(f"/ga4gh/tes/v1/tasks/{task_id}")
        assert got.json() == {"id": task_id, "state": "COMPLETE"}
