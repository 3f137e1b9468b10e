"""Request bodies at the API boundary, through HTTP against a real server: size caps read
while streaming, JSON without NaN/Infinity, YAML without aliases or exotic tags, nesting,
lone surrogates, NUL characters, strict booleans and integers, per-field limits, and
authentication before the body is looked at."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from jobgate.domain import limits
from tests.conftest import Server

EX = {"image": "alpine", "command": ["true"]}
MIB = 1024 * 1024


def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Dispatch on a short poll: a task that slipped through would fail in SYSTEM_ERROR fast.
    server = Server(tmp_path_factory.mktemp("bodies") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


def rss_mb(srv: Server) -> float:
    assert srv.proc is not None
    return psutil.Process(srv.proc.pid).memory_info().rss / MIB


def post_raw(client: httpx.Client, path: str, raw: bytes, ctype: str = "application/json") -> Any:
    return client.post(path, content=raw, headers={"content-type": ctype})


def assert_400(r: httpx.Response, where: str | None = None, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text[:2000]
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["message"]
    assert body["errors"] and all(e["where"] and e["what"] for e in body["errors"]), body
    if where is not None:
        assert any(e["where"] == where for e in body["errors"]), body
    return body


def tes_names(client: httpx.Client, prefix: str) -> list[str]:
    r = client.get("/ga4gh/tes/v1/tasks", params={"name_prefix": prefix, "view": "BASIC"})
    assert r.status_code == 200, r.text
    return [t["name"] for t in r.json()["tasks"]]


def native_count(client: httpx.Client, name: str) -> int:
    r = client.post(
        "/api/v1/jobs/search", json={"filters": [{"field": "name", "op": "eq", "value": name}]}
    )
    assert r.status_code == 200, r.text
    return len(r.json()["jobs"])


# -- non-finite numbers -------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1e309", "-1e309", "Infinity", "-Infinity", "NaN"])
def test_non_finite_ram_is_refused_by_tes_and_native(client: httpx.Client, number: str) -> None:
    name = f"nonfinite-{uid()}"
    task = f'{{"name":"{name}","resources":{{"ram_gb":{number}}},"executors":[{json.dumps(EX)}]}}'
    err = assert_400(post_raw(client, "/ga4gh/tes/v1/tasks", task.encode()), "body")
    assert "finite" in err["errors"][0]["what"]
    job = f'{{"name":"{name}","script":"true","resources":{{"ram_gb":{number}}}}}'
    assert_400(post_raw(client, "/api/v1/jobs", job.encode()), "body")
    assert tes_names(client, name) == []


def test_a_finite_but_huge_ram_is_refused(client: httpx.Client) -> None:
    """1e300 GB is finite, but not as a byte count (it overflowed when the task ran)."""
    task = {"resources": {"ram_gb": 1e300}, "executors": [EX]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=task), "body.resources.ram_gb")
    task = {"resources": {"disk_gb": limits.GB + 1}, "executors": [EX]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=task), "body.resources.disk_gb")


def test_non_finite_in_workstep_provenance_is_refused(client: httpx.Client) -> None:
    ws = b'{"container_image":"alpine","executable_entrypoint":"true","provenance_json":{"x":NaN}}'
    assert_400(post_raw(client, "/v1/worksteps", ws), "body")
    deep = b'{"container_image":"alpine","executable_entrypoint":"true",'
    deep += b'"system_parameters":{"memory_gb":1e400}}'
    assert_400(post_raw(client, "/v1/worksteps", deep), "body")


def test_yaml_infinity_is_refused_where_it_is(client: httpx.Client) -> None:
    r = post_raw(
        client, "/api/v1/jobs", b"script: 'true'\nresources:\n  ram_gb: .inf\n", "application/yaml"
    )
    assert_400(r, "body.resources.ram_gb")


# -- body size ----------------------------------------------------------------------------


def test_a_200_mib_tes_body_is_413_and_never_held_in_memory(
    client: httpx.Client, srv: Server
) -> None:
    before = rss_mb(srv)
    name = "x" * (200 * MIB)
    raw = b'{"name":"' + name.encode() + b'","executors":[{"image":"a","command":["b"]}]}'
    del name
    started = time.monotonic()
    r = post_raw(client, "/ga4gh/tes/v1/tasks", raw)
    elapsed = time.monotonic() - started
    err = assert_400(r, "body", status=413)
    assert err["code"] == "payload_too_large" and str(16 * MIB) in err["message"]
    after = rss_mb(srv)
    print(f"200 MiB TES body: {r.status_code} in {elapsed:.2f}s; RSS {before:.0f} -> {after:.0f}")
    assert after - before < 50, (before, after)


def test_a_chunked_body_is_cut_off_at_the_limit(client: httpx.Client, srv: Server) -> None:
    """No Content-Length: the stream is counted and refused once over the limit."""
    before = rss_mb(srv)
    chunk = b" " * MIB

    def body() -> Iterator[bytes]:
        yield b'{"script":"true","x":"'
        for _ in range(200):
            yield chunk

    try:
        headers = {"content-type": "application/json"}
        r = client.post("/api/v1/jobs", content=body(), headers=headers)
    except httpx.TransportError:
        # The server answered 413 and closed while the client still sent: also refused.
        r = None
    if r is not None:
        assert_400(r, "body", status=413)
    after = rss_mb(srv)
    print(f"200 MiB chunked native body: {r and r.status_code}; RSS {before:.0f} -> {after:.0f}")
    assert after - before < 50, (before, after)
    assert client.get("/healthz").status_code == 200


def test_a_50_mib_name_is_413_and_a_long_one_is_400(client: httpx.Client) -> None:
    prefix = f"long-{uid()}"
    big = {"name": prefix + "x" * (50 * MIB), "executors": [EX]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=big), "body", status=413)
    long = {"name": prefix + "x" * limits.NAME, "executors": [EX]}
    err = assert_400(client.post("/ga4gh/tes/v1/tasks", json=long), "body.name")
    assert str(limits.NAME) in err["errors"][0]["what"]
    assert_400(client.post("/api/v1/jobs", json={**long, "script": "true"}), "body.name")
    assert tes_names(client, prefix) == []


# -- counts -------------------------------------------------------------------------------


def test_100000_executors_or_tags_are_refused(client: httpx.Client) -> None:
    name = f"many-{uid()}"
    executors = {"name": name, "executors": [{"image": "a", "command": ["b"]}] * 100_000}
    err = assert_400(client.post("/ga4gh/tes/v1/tasks", json=executors))
    # Over the executors limit, and first over the objects-and-arrays limit of a body.
    assert err["errors"][0]["where"] in ("body", "body.executors"), err
    few = {"name": name, "executors": [EX] * (limits.EXECUTORS + 1)}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=few), "body.executors")
    tags = {"name": name, "executors": [EX], "tags": {f"k{i}": "v" for i in range(100_000)}}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=tags), "body.tags")
    labels = {"name": name, "script": "true", "labels": {f"k{i}": "" for i in range(100_000)}}
    assert_400(client.post("/api/v1/jobs", json=labels), "body.labels")
    args = {"name": name, "executors": [{"image": "a", "command": ["x"] * 100_000}]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=args), "body.executors[0].command")
    env = {f"V{i}": "" for i in range(limits.ENV + 1)}
    big_env = {"name": name, "executors": [{**EX, "env": env}]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=big_env), "body.executors[0].env")
    inputs = [{"path": f"/in/{i}", "content": ""} for i in range(limits.INPUTS + 1)]
    task = {"name": name, "inputs": inputs, "executors": [EX]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=task), "body.inputs")
    assert tes_names(client, name) == []


def test_a_body_of_too_many_values_is_400_but_commas_in_strings_do_not_count(
    client: httpx.Client,
) -> None:
    many = b'{"script":"true","x":[' + b",".join([b"0"] * (limits.MAX_VALUES + 1)) + b"]}"
    err = assert_400(post_raw(client, "/api/v1/jobs", many), "body")
    assert str(limits.MAX_VALUES) in err["errors"][0]["what"]
    csv = {"script": "true", "hold": True, "notes": "a,b,{c},[d]\n" * 300_000}
    r = client.post("/api/v1/jobs", json=csv)
    assert r.status_code == 201, r.text[:500]


def test_bulk_submission_has_a_job_count_limit(client: httpx.Client) -> None:
    jobs = [{"script": "true", "hold": True}] * (limits.BULK_JOBS + 1)
    assert_400(client.post("/api/v1/jobs/bulk", json={"jobs": jobs}), "body.jobs")


# -- YAML ---------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_is_refused_fast(client: httpx.Client, srv: Server) -> None:
    lines = ['a0: &a0 ["xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 5)}]")
    lines.append("script: 'true'\nlabels: {x: *a9}")
    raw = "\n".join(lines).encode()
    assert len(raw) < 1000
    before = rss_mb(srv)
    started = time.monotonic()
    err = assert_400(post_raw(client, "/api/v1/jobs", raw, "application/yaml"), "body")
    elapsed = time.monotonic() - started
    assert "anchors" in err["errors"][0]["what"]
    print(f"YAML alias bomb ({len(raw)} bytes): 400 in {elapsed:.3f}s; RSS {before:.0f} MB")
    assert elapsed < 2
    assert rss_mb(srv) - before < 20


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ("script: !!binary dHJ1ZQ==\n", "body.script"),
        ("script: 'true'\nlabels: {when: !!timestamp 2024-01-01}\n", "body.labels.when"),
        ("script: 'true'\nlabels: !!set {a}\n", "body.labels"),
        ("script: !!python/object/apply:os.system ['true']\n", "body"),
        ("script: 'true'\nlabels: {1: x}\n", "body.labels"),
        ('script: "tr\\0ue"\n', "body.script"),
        ('script: "\\ud800"\n', "body.script"),
    ],
    ids=["binary", "timestamp", "set", "python", "int-key", "nul", "surrogate"],
)
def test_yaml_beyond_plain_data_is_refused(client: httpx.Client, doc: str, where: str) -> None:
    assert_400(post_raw(client, "/api/v1/jobs", doc.encode(), "application/yaml"), where)


def test_an_unquoted_yaml_date_stays_a_string(client: httpx.Client) -> None:
    doc = f"name: d-{uid()}\nscript: 'true'\nhold: true\nlabels: {{day: 2024-01-01}}\n"
    r = post_raw(client, "/api/v1/jobs", doc.encode(), "application/yaml")
    assert r.status_code == 201, r.text
    assert r.json()["labels"] == {"day": "2024-01-01"}


def test_a_yaml_body_has_its_own_smaller_limit(client: httpx.Client) -> None:
    doc = b"script: 'true'\nname: " + b"x" * (2 * MIB) + b"\n"
    err = assert_400(post_raw(client, "/api/v1/jobs", doc, "application/yaml"), "body", 413)
    assert "YAML" in err["message"]


# -- nesting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "suffix"),
    [
        ("/api/v1/jobs", b'{"script":"true","labels":', b"}"),
        ("/api/v1/jobs/search", b'{"filters":[{"field":"name","value":', b"}]}"),
        (
            "/v1/worksteps",
            b'{"container_image":"a","executable_entrypoint":"b","provenance_json":{"x":',
            b"}}",
        ),
        ("/ga4gh/tes/v1/tasks", b'{"executors":[{"image":"a","command":["b"]}],"tags":', b"}"),
    ],
    ids=["job", "search", "workstep", "tes"],
)
@pytest.mark.parametrize("depth", [limits.MAX_DEPTH + 1, 100_000])
def test_deep_json_is_400(
    client: httpx.Client, path: str, prefix: bytes, suffix: bytes, depth: int
) -> None:
    raw = prefix + b"[" * depth + b"]" * depth + suffix
    err = assert_400(post_raw(client, path, raw))
    assert "deeper" in err["errors"][0]["what"]


def test_deep_yaml_is_400(client: httpx.Client) -> None:
    raw = b"script: 'true'\nlabels: " + b"[" * 10_000 + b"]" * 10_000 + b"\n"
    err = assert_400(post_raw(client, "/api/v1/jobs", raw, "application/yaml"), "body")
    assert "deeper" in err["errors"][0]["what"]


# -- strings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/ga4gh/tes/v1/tasks", {"name": "S", "executors": [EX]}, "body.name"),
        ("/ga4gh/tes/v1/tasks", {"tags": {"k": "S"}, "executors": [EX]}, "body.tags.k"),
        (
            "/ga4gh/tes/v1/tasks",
            {"executors": [{"image": "a", "command": ["echo", "S"]}]},
            "body.executors[0].command[1]",
        ),
        ("/api/v1/jobs", {"script": "true", "labels": {"k": "S"}}, "body.labels.k"),
        (
            "/api/v1/jobs/search",
            {"filters": [{"field": "name", "value": "S"}]},
            "body.filters[0].value",
        ),
    ],
    ids=["tes-name", "tes-tag", "tes-command", "native-label", "search-value"],
)
@pytest.mark.parametrize("bad", ["\\ud800", "x\\udfffy", "\\u0000"], ids=["hi", "lo", "nul"])
def test_lone_surrogates_and_nul_are_400(
    client: httpx.Client, path: str, body: dict[str, Any], where: str, bad: str
) -> None:
    raw = json.dumps(body).replace('"S"', f'"{bad}"').encode()
    assert_400(post_raw(client, path, raw), where)


def test_nul_in_a_command_argument_or_env_value_is_400(client: httpx.Client) -> None:
    name = f"nul-{uid()}"
    arg = {"name": name, "executors": [{"image": "a", "command": ["echo", "a\x00b"]}]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=arg), "body.executors[0].command[1]")
    env = {"name": name, "executors": [{**EX, "env": {"A": "x\x00"}}]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=env), "body.executors[0].env.A")
    key = {"name": name, "executors": [{**EX, "env": {"A\x00": "x"}}]}
    assert_400(client.post("/ga4gh/tes/v1/tasks", json=key), "body.executors[0].env")
    script = {"name": name, "script": "echo \x00"}
    assert_400(client.post("/api/v1/jobs", json=script), "body.script")
    assert tes_names(client, name) == []


def test_a_url_that_is_not_utf8_or_holds_nul_is_400(client: httpx.Client) -> None:
    r = client.get("/ga4gh/tes/v1/tasks?name_prefix=%ED%A0%80")
    assert_400(r, "query")
    r = client.get("/ga4gh/tes/v1/tasks?tag_key=%FF")
    assert_400(r, "query")
    assert_400(client.get("/ga4gh/tes/v1/tasks?name_prefix=a%00"), "query")
    assert_400(client.get("/ga4gh/tes/v1/tasks/a%00b"), "path")
    assert client.get("/ga4gh/tes/v1/tasks?name_prefix=%C3%A9").status_code == 200


# -- strict types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/api/v1/jobs", {"script": "true", "priority": False}, "body.priority"),
        ("/api/v1/jobs", {"script": "true", "priority": "5"}, "body.priority"),
        ("/api/v1/jobs", {"script": "true", "hold": 1}, "body.hold"),
        (
            "/ga4gh/tes/v1/tasks",
            {"executors": [{**EX, "ignore_error": 0}]},
            "body.executors[0].ignore_error",
        ),
        (
            "/ga4gh/tes/v1/tasks",
            {"executors": [EX], "resources": {"preemptible": "yes"}},
            "body.resources.preemptible",
        ),
        (
            "/ga4gh/tes/v1/tasks",
            {"executors": [EX], "resources": {"cpu_cores": True}},
            "body.resources.cpu_cores",
        ),
    ],
    ids=["priority-false", "priority-string", "hold-1", "ignore_error-0", "preemptible", "cpu"],
)
def test_booleans_and_integers_are_not_coerced(
    client: httpx.Client, path: str, body: dict[str, Any], where: str
) -> None:
    assert_400(client.post(path, json=body), where)


def test_patch_priority_false_is_400(client: httpx.Client) -> None:
    r = client.post("/api/v1/jobs", json={"script": "true", "hold": True})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert_400(client.patch(f"/api/v1/jobs/{job_id}", json={"priority": False}), "body.priority")
    bulk = {"ids": [job_id], "priority": True}
    assert_400(client.post("/api/v1/jobs/patch", json=bulk), "body.priority")
    assert client.get(f"/api/v1/jobs/{job_id}").json()["priority"] == 0


# -- authentication first -----------------------------------------------------------------


@pytest.fixture(scope="module")
def token_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("bodies-auth") / "data", {"JOBGATE_AUTH": "token"})
    yield server.start()
    server.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/ga4gh/tes/v1/tasks",
        "/api/v1/jobs",
        "/api/v1/jobs/cancel",
        "/api/v1/jobs/search",
        "/v1/worksteps",
        "/api/v1/tokens",
    ],
)
def test_a_malformed_body_without_credentials_is_401(token_srv: Server, path: str) -> None:
    r = httpx.post(
        token_srv.url + path, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 401, r.text
    big = httpx.post(
        token_srv.url + path,
        content=b"x" * (17 * MIB),
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 401, big.text


# -- documentation ------------------------------------------------------------------------


def test_the_readme_lists_every_limit() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for key, value in limits.PUBLISHED.items():
        row = re.search(rf"^\|\s*`{key}`\s*\|\s*([0-9,]+)\s*\|", readme, re.M)
        assert row, f"README has no row for limit {key}"
        assert int(row.group(1).replace(",", "")) == value, key
