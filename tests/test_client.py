"""jobgate.client against a live ``jobgate serve`` (sync and async), plus its retry and
configuration rules against small real HTTP servers."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobgate.client import (
    AsyncClient,
    BulkError,
    Client,
    ConfigError,
    Conflict,
    ConnectionFailed,
    IdempotencyKeyReused,
    InvalidRequest,
    JobRequest,
    NotFound,
    ServerError,
    State,
    WaitTimeout,
    resolve,
)
from tests.conftest import Server, free_port

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture()
def jg(server: Server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


@pytest.fixture()
async def ajg(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url) as client:
        yield client


def tag() -> str:
    """A label value unique to one test, so searches see only that test's jobs."""
    return uuid.uuid4().hex[:12]


# -- submission --------------------------------------------------------------------------


def test_submit_dict_model_and_yaml_text(jg: Client) -> None:
    from_dict = jg.submit({"name": "d", "script": "echo dict"})
    from_model = jg.submit(JobRequest(name="m", script="echo model", labels={"k": "v"}))
    from_yaml = jg.submit("name: y\nscript: echo yaml; echo oops >&2\n")
    assert from_dict.name == "d"  # its state may already have moved on from QUEUED
    assert from_model.labels == {"k": "v"}
    jobs = jg.wait([from_dict.id, from_model.id, from_yaml.id], timeout=30)
    assert [j.stdout for j in jobs] == ["dict\n", "model\n", "yaml\n"]
    assert jobs[2].stderr == "oops\n"
    assert all(j.ok and j.final and j.exit_code == 0 for j in jobs)


def test_submit_invalid_raises_with_where_and_what(jg: Client) -> None:
    with pytest.raises(InvalidRequest) as info:
        jg.submit({"name": 5, "script": "true"})
    assert info.value.status == 400
    assert [(e.where, e.what) for e in info.value.errors] == [
        ("body.name", "Input should be a valid string")
    ]
    assert "body.name" in str(info.value)
    with pytest.raises(InvalidRequest, match="YAML"):
        jg.submit("name: [unclosed\n")


def test_submit_idempotency_key(jg: Client) -> None:
    key = str(uuid.uuid4())
    first = jg.submit({"script": "true"}, idempotency_key=key)
    again = jg.submit({"script": "true"}, idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(IdempotencyKeyReused) as info:
        jg.submit({"script": "false"}, idempotency_key=key)
    assert info.value.status == 422
    # Without a key every call is a new job (each gets a fresh key).
    assert jg.submit({"script": "true"}).id != jg.submit({"script": "true"}).id


def test_submit_bulk_aligns_results_and_errors(jg: Client) -> None:
    result = jg.submit_bulk(
        [
            {"script": "echo a"},
            {"name": 1, "script": "x"},
            "script: echo c",
            JobRequest(script="true"),
        ]
    )
    assert [i.index for i in result] == [0, 1, 2, 3]
    assert [i.ok for i in result] == [True, False, True, True]
    bad = result[1]
    assert isinstance(bad.error, InvalidRequest) and bad.id is None
    assert bad.error.errors[0].where == "body.jobs[1].name"
    assert len(result.ids) == 3 and result.failed == [bad]
    with pytest.raises(BulkError, match="1 of 4 items failed") as info:
        result.raise_for_errors()
    assert info.value.failures == [bad]
    assert jg.submit_bulk([{"script": "true"}]).raise_for_errors().ids


def test_submit_parametric_expands_ranges_and_lists(jg: Client) -> None:
    t = tag()
    result = jg.submit_parametric(
        {"name": "p-{{ i }}-{{ s }}", "script": "echo {{ i }}{{ s }}", "labels": {"t": t}},
        {"i": range(0, 3), "s": ["a", "b"]},
    ).raise_for_errors()
    assert len(result) == 6 and result.group
    jobs = jg.wait(result.ids, timeout=60)
    assert sorted(j.stdout for j in jobs) == ["0a\n", "0b\n", "1a\n", "1b\n", "2a\n", "2b\n"]
    assert {j.group for j in jobs} == {result.group}
    assert {j.labels["param.s"] for j in jobs} == {"a", "b"}
    with pytest.raises(InvalidRequest):
        jg.submit_parametric({"script": "true"}, {"bad name": [1]})


# -- reading -----------------------------------------------------------------------------


def test_get_and_events(jg: Client) -> None:
    job = jg.wait(jg.submit({"name": "ev", "script": "exit 3"}).id, timeout=30)
    assert job.state == State.EXECUTOR_ERROR and job.exit_code == 3
    assert jg.get(job.id).detail == job.detail
    history = jg.events(job.id)
    assert history[0].state == State.QUEUED and history[0].from_state is None
    assert history[-1].state == State.EXECUTOR_ERROR
    assert all(e.job_id == job.id for e in history)
    with pytest.raises(NotFound, match="no task with id 'nope'"):
        jg.get("nope")
    with pytest.raises(NotFound):
        jg.events("nope")


def test_search_pages_and_iter_search(jg: Client) -> None:
    t = tag()
    ids = jg.submit_bulk(
        [{"name": f"s{i}", "script": "true", "labels": {"t": t}, "hold": True} for i in range(5)]
    ).ids
    page = jg.search([("labels.t", t)], fields=["id", "name"], limit=2)
    assert len(page.jobs) == 2 and page.next_cursor
    assert set(page.jobs[0]) == {"id", "name"}
    assert page.jobs[0]["id"] == ids[-1]  # newest first
    rest = jg.search([("labels.t", t)], fields=["id"], limit=10, cursor=page.next_cursor)
    assert rest.next_cursor is None and len(rest.jobs) == 3
    every = list(jg.iter_search([{"field": "labels.t", "value": t}], page_size=2))
    assert [r["id"] for r in every] == ids[::-1]
    oldest = list(jg.iter_search([("labels.t", "eq", t)], sort=["created_at:asc"], max_items=2))
    assert [r["id"] for r in oldest] == ids[:2]
    held = jg.search([("labels.t", t), ("state", "in", ["PAUSED"])], limit=100)
    assert len(held.jobs) == 5
    with pytest.raises(InvalidRequest, match="unknown field"):
        jg.search([("nofield", 1)])
    with pytest.raises(InvalidRequest, match="cursor"):
        jg.search(cursor="garbage!")
    jg.delete_many(ids).raise_for_errors()


def test_summary(jg: Client) -> None:
    t = tag()
    jg.submit_bulk([{"script": "true", "labels": {"t": t}, "hold": True}] * 3)
    groups = jg.summary("state,labels.t", [("labels.t", t)])
    assert groups == [{"state": "PAUSED", "labels.t": t, "count": 3}]
    assert jg.summary(["state"], [("labels.t", "none-" + t)]) == []


# -- control -----------------------------------------------------------------------------


def test_single_job_control(jg: Client) -> None:
    held = jg.submit({"script": "echo started", "hold": True})
    assert held.state == State.PAUSED
    assert jg.start(held.id) == State.QUEUED
    assert jg.wait(held.id, 30).stdout == "started\n"
    with pytest.raises(Conflict, match="not held"):
        jg.start(held.id)

    failed = jg.wait(jg.submit({"script": "exit 1"}).id, 30)
    assert jg.reschedule(failed.id) == State.QUEUED
    again = jg.wait(failed.id, 30)
    assert again.reschedules == 1 and again.state == State.EXECUTOR_ERROR
    with pytest.raises(Conflict):
        jg.reschedule(held.id)  # COMPLETE jobs are not rescheduled

    other = jg.submit({"script": "true", "hold": True})
    assert jg.cancel(other.id) == State.CANCELED
    patched = jg.patch(other.id, priority=7, labels={"a": "1", "b": "2"}, app_status="50%")
    assert (patched.priority, patched.labels, patched.app_status) == (
        7,
        {"a": "1", "b": "2"},
        "50%",
    )
    assert jg.patch(other.id, labels={"a": None}).labels == {"b": "2"}
    jg.delete(other.id)
    with pytest.raises(NotFound):
        jg.get(other.id)


def test_bulk_control_reports_each_item(jg: Client) -> None:
    ids = jg.submit_bulk([{"script": "exit 2", "hold": True}] * 2).ids
    started = jg.start_many([*ids, "nope"])
    assert [i.state for i in started[:2]] == [State.QUEUED, State.QUEUED]
    assert isinstance(started[2].error, NotFound) and started[2].id == "nope"
    jg.wait(ids, 30)
    assert [i.state for i in jg.reschedule_many(ids)] == [State.QUEUED] * 2
    jg.wait(ids, 30)
    patched = jg.patch_many([*ids, "nope"], priority=3, labels={"x": "y"})
    assert [i.ok for i in patched] == [True, True, False]
    assert all(jg.get(i).priority == 3 for i in ids)
    canceled = jg.cancel_many(ids)
    assert [i.state for i in canceled] == [State.EXECUTOR_ERROR] * 2  # final: unchanged
    running = jg.submit({"script": "sleep 30"})
    deleted = jg.delete_many([*ids, running.id])
    assert [i.ok for i in deleted] == [True, True, False]
    assert isinstance(deleted[2].error, Conflict)
    jg.cancel(running.id)


def test_bulk_control_splits_long_id_lists(jg: Client) -> None:
    # The server takes 10,000 ids per request; the client splits and keeps input order.
    held = jg.submit({"script": "true", "hold": True})
    missing = [f"missing-{i}" for i in range(10_000)]
    result = jg.cancel_many([*missing, held.id])
    assert len(result) == 10_001
    assert [i.id for i in result] == [*missing, held.id]
    assert not any(i.ok for i in result[:10_000])
    assert result[10_000].ok and result[10_000].state == State.CANCELED
    assert jg.get(held.id).state == State.CANCELED


async def test_async_bulk_control_splits_long_id_lists(ajg: AsyncClient) -> None:
    held = await ajg.submit({"script": "true", "hold": True})
    result = await ajg.delete_many([*(f"missing-{i}" for i in range(10_000)), held.id])
    assert len(result) == 10_001 and [i.ok for i in result[-2:]] == [False, True]


def test_wait_timeout_and_unknown_ids(jg: Client) -> None:
    slow = jg.submit({"script": "sleep 30"})
    quick = jg.submit({"script": "true"})
    seen: list[str] = []
    with pytest.raises(WaitTimeout) as info:
        jg.wait(
            [quick.id, slow.id], timeout=1.5, interval=0.2, on_final=lambda j: seen.append(j.id)
        )
    assert info.value.pending == [slow.id]
    assert [j.id for j in info.value.done] == [quick.id] == seen
    jg.cancel(slow.id)
    assert jg.wait(slow.id, 30).state == State.CANCELED
    with pytest.raises(NotFound):
        jg.wait([quick.id, "nope"], timeout=10)
    assert jg.wait([], timeout=1) == []
    never_ran = jg.submit({"script": "true", "hold": True})
    jg.cancel(never_ran.id)
    assert jg.wait(never_ran.id, 5).logs == []


def test_logs(jg: Client) -> None:
    job = jg.submit(
        {
            "executors": [
                {"image": "x", "command": ["sh", "-c", "echo one; echo e1 >&2; sleep 0.5"]},
                {"image": "x", "command": ["sh", "-c", "echo two"]},
            ]
        }
    )
    # follow: returns once the job has ended, with everything executor 0 wrote.
    assert "".join(jg.logs(job.id, follow=True)) == "one\n"
    assert jg.get(job.id).final
    assert "".join(jg.logs(job.id)) == "one\n"
    assert "".join(jg.logs(job.id, executor=1)) == "two\n"
    assert "".join(jg.logs(job.id, stream="stderr")) == "e1\n"
    with pytest.raises(NotFound):
        "".join(jg.logs("nope"))
    with pytest.raises(InvalidRequest):
        "".join(jg.logs(job.id, executor=5))


def test_logs_fall_back_to_the_kept_tail_without_the_endpoint() -> None:
    executor_log = {"exit_code": 0, "stdout": "a\n", "stderr": "b\n"}
    job = {"id": "j1", "state": "COMPLETE", "logs": [{"logs": [executor_log]}]}
    missing = (404, {"code": "not_found", "status": 404, "message": "Not Found"})
    srv = Scripted([missing, (200, job), missing, (200, {"jobs": [job], "next_cursor": None})])
    try:
        with Client(srv.url) as c:
            assert list(c.logs("j1", stream="stderr")) == ["b\n"]
            assert list(c.logs("j1", follow=True)) == ["a\n"]  # waits (a search), then the tail
        assert [(m, p.split("?")[0]) for m, p, _h in srv.requests] == [
            ("GET", "/api/v1/jobs/j1/logs"),
            ("GET", "/api/v1/jobs/j1"),
            ("GET", "/api/v1/jobs/j1/logs"),
            ("POST", "/api/v1/jobs/search"),
        ]
    finally:
        srv.close()


# -- GA4GH TES and service ---------------------------------------------------------------


def test_tes_calls(jg: Client) -> None:
    t = tag()
    task_id = jg.tes_create(
        {"name": "tes", "executors": [{"image": "x", "command": ["echo", "t"]}], "tags": {"t": t}}
    )
    assert jg.tes_get(task_id, "MINIMAL").keys() == {"id", "state"}
    jg.wait(task_id, 30)
    full = jg.tes_get(task_id)
    assert full["logs"][0]["logs"][0]["stdout"] == "t\n"
    listed = jg.tes_list(tags={"t": t}, view="BASIC")
    assert [x["id"] for x in listed["tasks"]] == [task_id]
    # A second task, so that a page of one cannot hold every task.
    jg.tes_create({"executors": [{"image": "x", "command": ["true"]}]})
    assert jg.tes_list(page_size=1)["next_page_token"]
    assert jg.tes_list(name_prefix="tes", tags={"t": t})["tasks"] == [
        {"id": task_id, "state": "COMPLETE"}
    ]
    held = jg.submit({"script": "true", "hold": True})
    jg.tes_cancel(held.id)
    assert jg.get(held.id).state == State.CANCELED
    assert jg.service_info()["type"]["artifact"] == "tes"
    assert jg.health()["status"] == "ok"
    with pytest.raises(InvalidRequest):
        jg.tes_create({"executors": []})


# -- async -------------------------------------------------------------------------------


async def test_async_submission_and_reading(ajg: AsyncClient) -> None:
    t = tag()
    one = await ajg.submit("script: echo async\n")
    bulk = await ajg.submit_bulk([{"script": "echo b", "labels": {"t": t}}, {"name": 1}])
    assert [i.ok for i in bulk] == [True, False]
    sweep = await ajg.submit_parametric(
        {"script": "echo {{ n }}", "labels": {"t": t}}, {"n": [1, 2]}
    )
    ids = [one.id, *bulk.ids, *sweep.ids]
    jobs = await ajg.wait(ids, timeout=30)
    assert [j.stdout for j in jobs] == ["async\n", "b\n", "1\n", "2\n"]
    assert (await ajg.get(one.id)).ok
    assert (await ajg.events(one.id))[-1].state == State.COMPLETE
    page = await ajg.search([("labels.t", t)], limit=2)
    assert len(page.jobs) == 2 and page.next_cursor
    rows = [r async for r in ajg.iter_search([("labels.t", t)], page_size=1)]
    assert len(rows) == 3
    assert await ajg.summary("labels.t", [("labels.t", t)]) == [{"labels.t": t, "count": 3}]
    assert "".join([c async for c in ajg.logs(one.id)]) == "async\n"
    assert "".join([c async for c in ajg.logs(one.id, follow=True)]) == "async\n"
    with pytest.raises(NotFound):
        await ajg.get("nope")
    with pytest.raises(WaitTimeout):
        slow = await ajg.submit({"script": "sleep 30"})
        try:
            await ajg.wait(slow.id, timeout=0.5)
        finally:
            await ajg.cancel(slow.id)


async def test_async_control_and_tes(ajg: AsyncClient) -> None:
    a, b = (await ajg.submit_bulk([{"script": "exit 1", "hold": True}] * 2)).ids
    assert await ajg.start(a) == State.QUEUED
    assert [i.state for i in await ajg.start_many([b])] == [State.QUEUED]
    await ajg.wait([a, b], 30)
    assert await ajg.reschedule(a) == State.QUEUED
    assert (await ajg.reschedule_many([b]))[0].state == State.QUEUED
    await ajg.wait([a, b], 30)
    assert (await ajg.patch(a, priority=5)).priority == 5
    assert (await ajg.patch_many([a, b], app_status="done")).ids == [a, b]
    held = await ajg.submit({"script": "true", "hold": True})
    assert await ajg.cancel(held.id) == State.CANCELED
    assert (await ajg.cancel_many([held.id]))[0].state == State.CANCELED
    await ajg.delete(held.id)
    assert [i.ok for i in await ajg.delete_many([a, b, "nope"])] == [True, True, False]

    task_id = await ajg.tes_create({"executors": [{"image": "x", "command": ["true"]}]})
    assert (await ajg.tes_get(task_id, "MINIMAL"))["id"] == task_id
    assert "tasks" in await ajg.tes_list(page_size=1)
    await ajg.tes_cancel(task_id)
    assert (await ajg.service_info())["type"]["group"] == "org.ga4gh"
    assert (await ajg.health())["status"] == "ok"


async def test_async_connection_refused() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01) as c:
        with pytest.raises(ConnectionFailed, match="is `jobgate serve` running"):
            await c.submit({"script": "true"})


# -- retries, tokens and configuration (a scripted real HTTP server) -----------------------


class Scripted:
    """A real HTTP server that answers from a script and records every request."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                scripted.requests.append(
                    (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                status, body = scripted.answers.pop(0) if scripted.answers else (500, {})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


JOB = {"id": "j1", "state": "QUEUED"}
BUSY = {"code": "internal_error", "status": 503, "message": "busy"}


def test_submit_retries_5xx_and_409_with_the_same_key() -> None:
    srv = Scripted([(503, BUSY), (409, {"status": 409, "message": "in flight"}), (201, JOB)])
    try:
        with Client(srv.url, token="s3cret", backoff=0.01) as c:
            assert c.submit({"script": "true"}).id == "j1"
        keys = {h["idempotency-key"] for _m, _p, h in srv.requests}
        assert len(srv.requests) == 3 and len(keys) == 1
        assert all(h["authorization"] == "Bearer s3cret" for _m, _p, h in srv.requests)
    finally:
        srv.close()


def test_retries_are_bounded_and_reads_are_not_retried() -> None:
    srv = Scripted([(503, BUSY)] * 10)
    try:
        with Client(srv.url, retries=2, backoff=0.01) as c:
            with pytest.raises(ServerError, match="busy"):
                c.submit({"script": "true"})
            assert len(srv.requests) == 3
            with pytest.raises(ServerError):
                c.get("x")
            assert len(srv.requests) == 4
    finally:
        srv.close()


def test_non_json_error_body_is_readable() -> None:
    class Plain(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(502)
            self.end_headers()
            self.wfile.write(b"<html>bad gateway</html>")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with Client(url) as c, pytest.raises(ServerError, match="HTTP 502: <html>bad gateway"):
            c.get("x")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_connection_refused_is_retried_then_explained() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retries=2, backoff=0.01) as c:
        with pytest.raises(ConnectionFailed) as info:
            c.submit({"script": "true"})
        assert str(info.value).startswith(f"cannot reach jobgate at {url}: is `jobgate serve`")
        with pytest.raises(ConnectionFailed):
            c.get("x")


def test_config_precedence(isolated_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve() == resolve(None, None)
    assert resolve().url == "http://127.0.0.1:8000" and resolve().token is None
    isolated_config.write_text('url = "https://file.example/"\ntoken = "ft"\n')
    assert (resolve().url, resolve().token) == ("https://file.example", "ft")
    monkeypatch.setenv("JOBGATE_URL", "env.example:9000")
    monkeypatch.setenv("JOBGATE_TOKEN", "et")
    assert (resolve().url, resolve().token) == ("http://env.example:9000", "et")
    assert (resolve("http://arg", "at").url, resolve("http://arg", "at").token) == (
        "http://arg",
        "at",
    )
    isolated_config.write_text("url = [")
    monkeypatch.delenv("JOBGATE_URL")
    with pytest.raises(ConfigError, match=r"config\.toml"):
        resolve()
    with pytest.raises(ConfigError, match="http"):
        resolve("ftp://x", "t")


def test_config_file_reaches_the_server(server: Server, isolated_config: Path) -> None:
    isolated_config.write_text(f'url = "{server.url}"\n')
    with Client() as c:
        assert c.url == server.url
        assert c.health()["status"] == "ok"
