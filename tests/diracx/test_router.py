"""The DiracX router's answers to bad input (400 naming what and where), its paging
headers, its status map and its signed sandbox URLs, over plain HTTP."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.auth.conftest import make_token
from tests.conftest import Server
from tests.diracx.conftest import http
from tests.support import uid

URL_SECONDS = 2


@pytest.fixture(scope="module")
def router_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Jobs here are held or never valid: the default runtime never runs one.
    srv = Server(
        tmp_path_factory.mktemp("dxr") / "data",
        {"JOBGATE_AUTH": "token", "JOBGATE_DIRACX_SANDBOX_URL_SECONDS": str(URL_SECONDS)},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(router_server: Server) -> Iterator[httpx.Client]:
    admin = (router_server.data_dir / "admin-token").read_text().strip()
    with http(router_server, make_token(router_server, admin, "alice")) as client:
        yield client


def jdl_error(resp: httpx.Response) -> tuple[str, str]:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "invalid_request"
    return body["errors"][0]["where"], body["errors"][0]["what"]


@pytest.mark.parametrize(
    ("jdls", "where", "what"),
    [
        (
            ['Executable = "x";', 'Executable = "y";\nArguments = ;'],
            "body[1]",
            "attribute Arguments, line 2",
        ),
        (['Arguments = "a";'], "body[0]", "attribute Executable"),
        (['Executable = "x"; Parameters = 21;'], "body[0]", "at most 20 jobs"),
        (['Executable = "x"; Parameters = 2;', 'Executable = "y";'], "body[0]", "not in bulk"),
        (['Executable = "x"; InputSandbox = {"local.txt"};'], "body[0]", "upload the files first"),
        (['Executable = "x"; OutputSandbox = {"../escape"};'], "body[0]", "relative path"),
        (['Executable = "x"; OutputSandbox = {"LFN:/vo/f"};'], "body[0]", "file catalog"),
        (['Executable = "x"; NumberOfProcessors = 0;'], "body[0]", "positive integer"),
        (['Executable = "x"; Priority = "high";'], "body[0]", "attribute Priority"),
        ([], "body", "non-empty"),
    ],
)
def test_bad_jdl_is_a_400_naming_the_jdl_attribute_and_line(
    alice: httpx.Client, jdls: list[str], where: str, what: str
) -> None:
    got_where, got_what = jdl_error(alice.post("/api/jobs/jdl", json=jdls))
    assert got_where == where
    assert what in got_what


def test_more_jdls_than_the_cap(alice: httpx.Client) -> None:
    where, what = jdl_error(alice.post("/api/jobs/jdl", json=['Executable = "x";'] * 21))
    assert (where, what) == ("body", "at most 20 jobs in one submission")


def test_the_body_must_be_a_list_of_strings(alice: httpx.Client) -> None:
    assert jdl_error(alice.post("/api/jobs/jdl", json={"jdl": "x"}))[0] == "body"
    assert jdl_error(alice.post("/api/jobs/jdl", json=[1]))[0] == "body"


def test_no_job_on_another_users_behalf(alice: httpx.Client) -> None:
    r = alice.post("/api/jobs/jdl", json=['Executable = "x";\nOwner = "token:bob";'])
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["where"] == "jdl: attribute Owner, line 2"
    mine = alice.post("/api/jobs/jdl", json=['Executable = "x"; Owner = "token:alice";'])
    assert mine.status_code == 201, mine.text


def held_jobs(alice: httpx.Client, n: int) -> tuple[str, list[int]]:
    """``n`` held jobs of a new group (they never run), and their JobIDs, oldest first."""
    group = f"g-{uid()}"
    for i in range(n):
        job = {"script": "true", "hold": True, "name": f"n{i}", "labels": {"JobGroup": group}}
        assert alice.post("/api/v1/jobs", json=job).status_code == 201
    r = alice.post(
        "/api/jobs/search",
        json={"search": [{"parameter": "JobGroup", "operator": "eq", "value": group}]},
    )
    return group, [j["JobID"] for j in r.json()]


def test_search_pages_content_range_and_the_status_map(alice: httpx.Client) -> None:
    group, ids = held_jobs(alice, 3)
    cond = [{"parameter": "JobGroup", "operator": "eq", "value": group}]
    first = alice.post("/api/jobs/search", params={"per_page": 2}, json={"search": cond})
    assert first.status_code == 206
    assert first.headers["content-range"] == "jobs 0-1/3"
    assert [j["JobID"] for j in first.json()] == ids[:2]
    assert first.json()[0]["Status"] == "Received"  # held: accepted, not yet released
    assert first.json()[0]["MinorStatus"] == "Job held"
    past = alice.post("/api/jobs/search", params={"page": 3, "per_page": 2}, json={"search": cond})
    assert past.status_code == 416
    assert past.headers["content-range"] == "jobs */3"
    whole = alice.post("/api/jobs/search", json={"search": cond})
    assert whole.status_code == 200 and "content-range" not in whole.headers
    # Waiting (released), then Killed (canceled): the map both ways.
    stamp = "2026-01-01T00:00:00Z"
    r = alice.patch("/api/jobs/status", json={str(ids[0]): {stamp: {"Status": "Killed"}}})
    assert r.status_code == 200, r.text
    assert r.json()["success"][str(ids[0])]["Status"] == "Killed"
    killed = [{"parameter": "Status", "operator": "eq", "value": "Killed"}, *cond]
    assert [j["JobID"] for j in alice.post("/api/jobs/search", json={"search": killed}).json()] == [
        ids[0]
    ]
    summary = alice.post("/api/jobs/summary", json={"grouping": ["Status"], "search": cond})
    assert summary.json() == [{"Status": "Received", "count": 2}, {"Status": "Killed", "count": 1}]


@pytest.mark.parametrize(
    ("body", "params", "where"),
    [
        ({"search": [{"parameter": "JobID", "operator": "regex", "value": "1"}]}, {}, "operator"),
        ({"search": [{"parameter": "JobID", "operator": "eq", "value": "x"}]}, {}, "value"),
        ({"search": [{"parameter": "Status", "operator": "like", "value": "D%"}]}, {}, "operator"),
        ({"search": [{"parameter": "JobID", "operator": "in", "value": 1}]}, {}, "search"),
        ({"search": [{"parameter": "JobID", "operator": "is", "value": 1}]}, {}, "operator"),
        ({"sort": [{"parameter": "Site", "direction": "asc"}]}, {}, "sort"),
        ({}, {"per_page": 0}, "per_page"),
        ({"parameters": "JobID"}, {}, "parameters"),
    ],
)
def test_bad_searches_are_400s(
    alice: httpx.Client, body: dict[str, object], params: dict[str, int], where: str
) -> None:
    r = alice.post("/api/jobs/search", params=params, json=body)
    assert r.status_code == 400, r.text
    assert where in r.json()["errors"][0]["where"]


def test_statuses_jobgate_sets_itself_are_refused(alice: httpx.Client) -> None:
    _group, ids = held_jobs(alice, 1)
    stamp = "2026-01-01T00:00:00Z"
    r = alice.patch("/api/jobs/status", json={str(ids[0]): {stamp: {"Status": "Done"}}})
    assert r.status_code == 400
    assert "cannot be set" in r.json()["errors"][0]["what"] or "cannot set" in r.text
    bad = alice.patch("/api/jobs/status", json={str(ids[0]): {stamp: {"Status": "Finished"}}})
    assert bad.status_code == 400 and bad.json()["errors"][0]["where"].endswith(".Status")
    when = alice.patch("/api/jobs/status", json={str(ids[0]): {"yesterday": {"Status": "Killed"}}})
    assert when.status_code == 400 and "ISO 8601" in when.json()["errors"][0]["what"]
    released = alice.patch("/api/jobs/status", json={str(ids[0]): {stamp: {"Status": "Waiting"}}})
    assert released.json()["success"][str(ids[0])]["Status"] == "Waiting"


def test_unknown_jobs_are_404s(alice: httpx.Client) -> None:
    r = alice.post("/api/jobs/kill", params={"job_ids": [999_999]})
    assert r.status_code == 404
    assert r.json()["detail"]["failed_job_ids"] == [999_999]
    assert alice.patch("/api/jobs/metadata", json={"999999": {"Site": "x"}}).status_code == 404
    _group, ids = held_jobs(alice, 1)
    for bad in ({"": 1}, {"Status": "Done"}, {"UserPriority": "high"}):
        r = alice.patch("/api/jobs/metadata", json={str(ids[0]): bad})
        assert r.status_code == 400, (bad, r.text)
    assert alice.get("/api/jobs/999999/sandbox").status_code == 404


def test_sandbox_urls_are_signed_and_expire(alice: httpx.Client, router_server: Server) -> None:
    content = f"sandbox {uid()}".encode()
    info = {
        "checksum_algorithm": "sha256",
        "checksum": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "format": "tar.bz2",
    }
    start = alice.post("/api/jobs/sandbox", json=info).json()
    assert start["url"] and start["pfn"].endswith(f"sha256:{info['checksum']}.tar.bz2")
    forged = start["url"].rsplit("/", 1)[0] + "/not-a-token"
    assert httpx.post(forged, content=content).status_code == 403
    wrong = httpx.post(start["url"], files={"file": ("f", b"other bytes")})
    assert wrong.status_code == 400 and "not the sandbox" in wrong.json()["message"]
    too_big = httpx.post(start["url"], content=bytes(len(content) + 70_000))
    assert too_big.status_code == 413
    assert httpx.post(start["url"], files={"file": ("f", content)}).status_code == 204
    again = alice.post("/api/jobs/sandbox", json=info).json()
    assert again == {"pfn": start["pfn"], "url": None, "fields": {}}
    down = alice.get("/api/jobs/sandbox", params={"pfn": start["pfn"]}).json()
    assert down["expires_in"] == URL_SECONDS
    assert httpx.get(down["url"]).content == content
    time.sleep(URL_SECONDS + 1.1)
    expired = httpx.get(down["url"])
    assert expired.status_code == 403 and "expired" in expired.json()["message"]
    bad = alice.get("/api/jobs/sandbox", params={"pfn": "/S3/elsewhere/file.tar"})
    assert bad.status_code == 400


def test_heartbeats_are_recorded_and_shown(alice: httpx.Client) -> None:
    group = f"g-{uid()}"
    # Taken while the job is queued or runs (a held job takes none).
    job = {"script": "sleep 30", "labels": {"JobGroup": group}}
    created = alice.post("/api/v1/jobs", json=job)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    seq = alice.post(
        "/api/jobs/search",
        json={"search": [{"parameter": "JobGroup", "operator": "eq", "value": group}]},
    ).json()
    bad = alice.patch("/api/jobs/heartbeat", json={"1": {"LoadAverage": "high"}})
    assert bad.status_code == 400 and bad.json()["errors"][0]["where"] == "body.1.LoadAverage"
    (number,) = [j["JobID"] for j in seq]
    beat = {"LoadAverage": 1.5, "MemoryUsed": 2048, "CPUConsumed": 3, "StandardOutput": "hi"}
    r = alice.patch("/api/jobs/heartbeat", json={str(number): beat})
    assert r.status_code == 200 and r.json() == [], r.text
    deadline = time.monotonic() + 10
    while True:  # heartbeats are written in batches (every second by default)
        shown = alice.get(f"/api/v1/jobs/{job_id}").json().get("heartbeat")
        if shown or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown is not None
    assert (shown["load"], shown["memory_bytes"], shown["cpu_seconds"]) == (1.5, 2 << 20, 3.0)
    assert shown["stdout"] == "hi"
    found = alice.post(
        "/api/jobs/search",
        json={
            "parameters": ["JobID", "HeartBeatTime"],
            "search": [{"parameter": "JobID", "operator": "eq", "value": number}],
        },
    ).json()
    assert found[0]["HeartBeatTime"] is not None
    assert alice.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
