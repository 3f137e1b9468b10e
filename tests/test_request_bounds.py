"""Inputs that once gave a 500 (or a job that could only fail) get a clear 400 at once.

Against one real server: paging tokens and event ids past 64 bits, too many search
filters, parametric ranges far past the cap, and file paths no task can use.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobgate.domain.query import MAX_FILTERS, MAX_IN_VALUES, MAX_VALUE_LENGTH
from tests.conftest import Server

TOO_BIG = 2**63  # one past the largest signed 64-bit integer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("bounds") / "data").start()
    yield server
    server.stop()


@pytest.fixture()
def client(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def error(r: httpx.Response, where: str) -> dict[str, Any]:
    """The project's error body of a 400, with an entry at ``where``."""
    assert r.status_code == 400, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] and body["status"] == 400 and body["message"]
    assert where in [e["where"] for e in body["errors"]], body
    return body


def token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# -- tokens and ids ------------------------------------------------------------------------


def test_tes_page_token_past_64_bits_is_a_400(client: httpx.Client) -> None:
    r = client.get("/ga4gh/tes/v1/tasks", params={"page_token": "czk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"})
    error(r, "query.page_token")
    for raw in (f"s{TOO_BIG}", "s-1", "s1e5", "s"):
        error(
            client.get("/ga4gh/tes/v1/tasks", params={"page_token": token(raw)}), "query.page_token"
        )
    # The largest valid one pages (to nothing older than it).
    r = client.get("/ga4gh/tes/v1/tasks", params={"page_token": token(f"s{TOO_BIG - 1}")})
    assert r.status_code == 200, r.text


def test_search_cursor_past_64_bits_is_a_400(client: httpx.Client) -> None:
    keys = '["created_at:desc","seq:desc"]'
    raw = f'{{"k":{keys},"v":["2026-01-01T00:00:00+00:00",{TOO_BIG}]}}'
    r = client.post("/api/v1/jobs/search", json={"cursor": token(raw)})
    error(r, "body")


@pytest.mark.parametrize("path", ["/api/v1/events/stream", "/api/v1/jobs/{id}/events/stream"])
def test_event_stream_resume_points_past_64_bits_are_400s(client: httpx.Client, path: str) -> None:
    job = client.post("/api/v1/jobs", json={"script": "true", "hold": True})
    assert job.status_code == 201, job.text
    url = path.format(id=job.json()["id"])
    error(client.get(url, params={"after": TOO_BIG}), "query.after")
    error(client.get(url, headers={"Last-Event-ID": str(TOO_BIG)}), "header.Last-Event-ID")
    error(client.get(url, headers={"Last-Event-ID": "9" * 30}), "header.Last-Event-ID")
    # The largest one is accepted: the stream starts (its first line is the keep-alive).
    with client.stream("GET", url, params={"after": TOO_BIG - 1}) as r:
        assert r.status_code == 200
        assert next(r.iter_lines()).startswith(":")


def test_executor_index_past_64_bits_is_a_400(client: httpx.Client) -> None:
    job = client.post("/api/v1/jobs", json={"script": "true", "hold": True}).json()
    r = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"executor": TOO_BIG})
    error(r, "query.executor")


def test_token_lifetime_past_any_date_is_a_400(client: httpx.Client) -> None:
    r = client.post("/api/v1/tokens", json={"owner": "x", "expires_in": 10**20})
    error(r, "body.expires_in")


# -- search and summary ----------------------------------------------------------------------


def label_filters(n: int) -> list[dict[str, Any]]:
    return [{"field": f"labels.k{i}", "value": f"v{i}"} for i in range(n)]


@pytest.mark.parametrize("endpoint", ["search", "summary"])
def test_a_thousand_label_filters_is_a_400_naming_the_limit(
    client: httpx.Client, endpoint: str
) -> None:
    extra = {"group_by": ["state"]} if endpoint == "summary" else {}
    r = client.post(f"/api/v1/jobs/{endpoint}", json={"filters": label_filters(1000), **extra})
    body = error(r, "body.filters")
    assert str(MAX_FILTERS) in body["message"]
    # At the limit, it runs.
    r = client.post(
        f"/api/v1/jobs/{endpoint}", json={"filters": label_filters(MAX_FILTERS), **extra}
    )
    assert r.status_code == 200, r.text


def test_in_lists_and_long_values_are_bounded(client: httpx.Client) -> None:
    many = {"field": "labels.k", "op": "in", "value": [str(i) for i in range(MAX_IN_VALUES + 1)]}
    body = error(
        client.post("/api/v1/jobs/search", json={"filters": [many]}), "body.filters[0].value"
    )
    assert str(MAX_IN_VALUES) in body["message"]
    ok = {**many, "value": many["value"][:MAX_IN_VALUES]}
    assert client.post("/api/v1/jobs/search", json={"filters": [ok]}).status_code == 200
    long = {"field": "labels.k", "value": "x" * (MAX_VALUE_LENGTH + 1)}
    body = error(
        client.post("/api/v1/jobs/search", json={"filters": [long]}), "body.filters[0].value"
    )
    assert str(MAX_VALUE_LENGTH) in body["message"]
    key = {"field": "labels." + "k" * MAX_VALUE_LENGTH, "value": "v"}
    error(client.post("/api/v1/jobs/search", json={"filters": [key]}), "body.filters[0].field")


def test_tes_tag_filters_are_bounded(client: httpx.Client) -> None:
    params = [("tag_key", f"k{i}") for i in range(1000)]
    body = error(client.get("/ga4gh/tes/v1/tasks", params=params), "query.tag_key")
    assert str(MAX_FILTERS) in body["errors"][0]["what"]
    params = [("tag_key", f"k{i}") for i in range(MAX_FILTERS)]
    assert client.get("/ga4gh/tes/v1/tasks", params=params).status_code == 200


# -- parametric ------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [30_000_000, 10**12, 10**30])
def test_huge_parametric_ranges_are_refused_before_expanding(
    client: httpx.Client, srv: Server, stop: int
) -> None:
    assert srv.proc is not None
    start = time.monotonic()
    r = client.post(
        "/api/v1/jobs/parametric",
        json={"job": {"script": "echo {{ i }}", "hold": True}, "parameters": {"i": {"stop": stop}}},
    )
    took = time.monotonic() - start
    body = error(r, "body.parameters")
    assert "10000" in body["errors"][0]["what"]
    assert took < 2, f"{took:.1f} s: the range was built"
    rss_kb = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    )
    assert rss_kb < 500_000, f"peak RSS {rss_kb} kB: the range was built"


def test_an_empty_range_times_a_huge_one_is_no_job(client: httpx.Client) -> None:
    r = client.post(
        "/api/v1/jobs/parametric",
        json={
            "job": {"script": "echo {{ i }} {{ j }}", "hold": True},
            "parameters": {"i": {"start": 5, "stop": 5}, "j": {"stop": 10**30}},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["succeeded"] == 0


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "//", "/.", "/proc/x", "/dev/shm/x", "//sys/./x"])
def test_inputs_and_outputs_where_no_task_can_have_files_are_400s(
    client: httpx.Client, path: str
) -> None:
    executors = [{"image": "alpine", "command": ["true"]}]
    tes = client.post(
        "/ga4gh/tes/v1/tasks",
        json={"executors": executors, "inputs": [{"path": path, "content": "x"}]},
    )
    error(tes, "body.inputs[0].path")
    native = client.post(
        "/api/v1/jobs",
        json={"script": "true", "outputs": [{"path": path, "url": "file:///tmp/out"}]},
    )
    assert native.status_code == 400, native.text
    assert any("outputs[0].path" in e["where"] for e in native.json()["errors"])


def test_uploads_where_no_task_can_read_them_are_400s(client: httpx.Client) -> None:
    job = client.post("/api/v1/jobs", json={"script": "true", "hold": True}).json()
    for path in ("proc/x", "dev/x", "sys/kernel/x", "./proc/x"):
        r = client.put(f"/api/v1/jobs/{job['id']}/files/{path}", content=b"x")
        assert r.status_code == 400, (path, r.text)
        assert r.json()["errors"][0]["where"] == "path"
    r = client.put(f"/api/v1/jobs/{job['id']}/files/data/proc/x", content=b"x")
    assert r.status_code == 201, r.text
