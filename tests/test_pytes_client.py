"""TES behaviours through the real py-tes client (``import tes``), as its users call it.

py-tes is strict: it builds ``attrs`` models from every response and fails on a field the
spec does not have or a value of the wrong type, so every call here is also a check that
the server's documents parse. Everything runs against the session's ``jobgate serve``.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import tes
from tes.client import append_suffixes_to_url, send_request
from tes.models import ListTasksResponse
from tes.utils import unmarshal

from jobgate.domain.lifecycle import PARAMETER_KEYS
from tests.conftest import Server
from tests.support import pytes_final, pytes_run, pytes_sh, requires_bwrap, uid

IMAGE = "alpine"


@pytest.fixture()
def client(server: Server) -> tes.HTTPClient:
    return tes.HTTPClient(server.url, timeout=30)


def list_filtered(client: tes.HTTPClient, **params: Any) -> ListTasksResponse:
    """GET /tasks with the spec's filters, parsed by py-tes's own models.

    py-tes 1.1.4's ``list_tasks`` only passes view/page_size/page_token; it sends the request
    exactly like this otherwise (same URL fallbacks, same unmarshalling).
    """
    response = send_request(
        paths=append_suffixes_to_url(client.urls, ["/tasks"]),
        kwargs_requests=client._request_params(params=params),
    )
    return unmarshal(response.json(), ListTasksResponse)


def names(resp: ListTasksResponse) -> list[str]:
    return [t.name for t in resp.tasks or []]


# -- service-info -------------------------------------------------------------------------


def test_service_info_parses(client: tes.HTTPClient, allowed_dir: Path) -> None:
    info = client.get_service_info()
    assert isinstance(info, tes.models.ServiceInfo)
    assert info.type == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info.id and info.name and info.version
    assert info.organization and info.organization["name"]
    # Where file:// URLs may point, and which backend_parameters keys are honoured.
    assert allowed_dir.resolve().as_uri() in (info.storage or [])
    # The backend choice and the lifecycle policy: the local backend takes no others.
    assert info.tes_resources_backend_parameters == sorted({"backend", *PARAMETER_KEYS})


# -- create, wait, views ------------------------------------------------------------------


def test_create_wait_and_full_view(client: tes.HTTPClient) -> None:
    task = tes.Task(
        name=f"full-{uid()}",
        description="two executors",
        tags={"suite": "pytes"},
        resources=tes.Resources(cpu_cores=1),
        executors=[
            pytes_sh("echo out-1; echo err-1 >&2"),
            pytes_sh("echo out-2; exit 0"),
        ],
    )
    task_id = client.create_task(task)
    assert isinstance(task_id, str) and task_id

    done = client.wait(task_id, timeout=30)
    assert done.state == "COMPLETE"

    full = client.get_task(task_id, view="FULL")
    assert isinstance(full, tes.Task)
    assert (full.id, full.state, full.name) == (task_id, "COMPLETE", task.name)
    assert full.description == "two executors"
    assert full.tags == {"suite": "pytes"}
    assert full.resources == tes.Resources(cpu_cores=1)
    assert [e.command for e in full.executors] == [e.command for e in task.executors]
    assert isinstance(full.creation_time, datetime) and full.creation_time.tzinfo is not None

    assert len(full.logs) == 1
    tlog = full.logs[0]
    assert isinstance(tlog, tes.TaskLog)
    assert tlog.start_time <= tlog.end_time
    assert full.creation_time <= tlog.start_time
    assert [(e.stdout, e.stderr, e.exit_code) for e in tlog.logs] == [
        ("out-1\n", "err-1\n", 0),
        ("out-2\n", "", 0),
    ]
    assert all(isinstance(e, tes.ExecutorLog) and e.start_time <= e.end_time for e in tlog.logs)
    assert tlog.metadata is not None and tlog.metadata.get("attempt") == "1"


def test_minimal_basic_full_views_hold_what_the_spec_says(
    client: tes.HTTPClient, http_files: tuple[str, Path]
) -> None:
    ok = pytes_run(
        client,
        tes.Task(
            name=f"views-{uid()}",
            tags={"k": "v"},
            inputs=[tes.Input(path="/in/msg.txt", content="secret\n")],
            executors=[tes.Executor(image=IMAGE, command=["echo", "shown"])],
        ),
    )
    assert ok.state == "COMPLETE"

    minimal = client.get_task(ok.id, view="MINIMAL")
    assert minimal == tes.Task(id=ok.id, state="COMPLETE")
    assert client.get_task(ok.id).state == "COMPLETE"  # py-tes defaults to BASIC

    basic = client.get_task(ok.id, view="BASIC")
    assert basic.tags == {"k": "v"} and basic.executors and basic.creation_time
    assert basic.inputs[0].path == "/in/msg.txt" and basic.inputs[0].content is None
    elog = basic.logs[0].logs[0]
    assert (elog.stdout, elog.stderr, elog.exit_code) == (None, None, 0)

    assert ok.inputs[0].content == "secret\n"
    assert ok.logs[0].logs[0].stdout == "shown\n"

    # system_logs: FULL only.
    base, _root = http_files
    failed = pytes_run(
        client,
        tes.Task(
            name=f"views-err-{uid()}",
            inputs=[tes.Input(url=f"{base}/no-such-{uid()}.txt", path="/in/x")],
            executors=[tes.Executor(image=IMAGE, command=["true"])],
        ),
    )
    assert failed.state == "SYSTEM_ERROR"
    assert any("404" in line for line in failed.logs[0].system_logs), failed.logs
    assert client.get_task(failed.id, view="BASIC").logs[0].system_logs is None

    # Every task this session's server holds parses in every view.
    for view in ("MINIMAL", "BASIC", "FULL"):
        listed = client.list_tasks(view=view, page_size=2048)
        assert {ok.id, failed.id} <= {t.id for t in listed.tasks}
        if view == "MINIMAL":
            assert all(t == tes.Task(id=t.id, state=t.state) for t in listed.tasks)


# -- listing ------------------------------------------------------------------------------


def test_list_pages_with_tokens_newest_first(client: tes.HTTPClient) -> None:
    prefix = f"page-{uid()}"
    ids = [
        client.create_task(
            tes.Task(name=f"{prefix}-{i}", executors=[tes.Executor(image=IMAGE, command=["true"])])
        )
        for i in range(5)
    ]
    # The newest tasks come first, two to a page, each page pointing at the next.
    first: list[str] = []
    token: str | None = None
    for _ in range(3):
        page = client.list_tasks(view="MINIMAL", page_size=2, page_token=token)
        first += [t.id for t in page.tasks]
        token = page.next_page_token
    assert first[:5] == ids[::-1]

    # Walking every page visits every task once and ends without a token.
    seen: list[str] = []
    token = None
    for _ in range(10_000):
        page = client.list_tasks(view="BASIC", page_size=7, page_token=token)
        assert 1 <= len(page.tasks) <= 7
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if token is None:
            break
    assert len(seen) == len(set(seen)), "a task appeared on two pages"
    everything = client.list_tasks(view="MINIMAL", page_size=2048)
    assert everything.next_page_token is None or len(everything.tasks) == 2048
    assert seen[:2048] == [t.id for t in everything.tasks]

    with pytest.raises(requests.HTTPError) as err:
        client.list_tasks(page_size=0)
    assert err.value.response.status_code == 400


def test_list_filters_parse_through_pytes(client: tes.HTTPClient) -> None:
    run_id = uid()
    prefix = f"flt-{run_id}"
    specs = {
        "a": ({"team": "x", "run": run_id}, "true"),
        "b": ({"team": "y", "run": run_id}, "exit 1"),
        "c": ({"run": run_id, "flag": ""}, "true"),
        "50%_off": ({"run": run_id}, "true"),
    }
    for suffix, (tags, script) in specs.items():
        pytes_final(
            client,
            client.create_task(
                tes.Task(name=f"{prefix}-{suffix}", tags=tags, executors=[pytes_sh(script)])
            ),
        )

    def listed(**params: Any) -> set[str]:
        resp = list_filtered(client, view="BASIC", **params)
        return {n.removeprefix(prefix + "-") for n in names(resp)}

    assert listed(name_prefix=prefix) == set(specs)
    # A plain prefix: '%' and '_' are not wildcards.
    assert listed(name_prefix=f"{prefix}-50%") == {"50%_off"}
    assert listed(name_prefix=f"{prefix}-5_") == set()
    assert listed(name_prefix=prefix, state="EXECUTOR_ERROR") == {"b"}
    assert listed(name_prefix=prefix, state="COMPLETE") == {"a", "c", "50%_off"}
    assert listed(tag_key="run", tag_value=run_id) == set(specs)
    assert listed(tag_key="team", tag_value="x") == {"a"}
    assert listed(tag_key="team", name_prefix=prefix) == {"a", "b"}
    assert listed(tag_key=["team", "run"], tag_value=["y", run_id]) == {"b"}
    assert listed(tag_key="flag", name_prefix=prefix) == {"c"}

    # Paging keeps the filters.
    got: list[str] = []
    params: dict[str, Any] = {"name_prefix": prefix, "page_size": 1, "view": "FULL"}
    while True:
        page = list_filtered(client, **params)
        assert len(page.tasks) == 1
        got += names(page)
        if page.next_page_token is None:
            break
        params["page_token"] = page.next_page_token
    assert sorted(got) == sorted(f"{prefix}-{s}" for s in specs)


# -- cancel -------------------------------------------------------------------------------


def test_cancel_running_task(client: tes.HTTPClient) -> None:
    task_id = client.create_task(
        tes.Task(
            name=f"cancel-{uid()}", executors=[tes.Executor(image=IMAGE, command=["sleep", "60"])]
        )
    )
    deadline = time.monotonic() + 15
    while client.get_task(task_id).state != "RUNNING":
        assert time.monotonic() < deadline, "task never ran"
        time.sleep(0.05)

    t0 = time.monotonic()
    assert client.cancel_task(task_id) is None
    # py-tes's wait() returns once the task leaves QUEUED/INITIALIZING/RUNNING.
    assert client.wait(task_id, timeout=10).state in ("CANCELING", "CANCELED")
    canceled = pytes_final(client, task_id, timeout=10)
    assert canceled.state == "CANCELED"
    assert time.monotonic() - t0 < 10, "the sleep was not killed"

    client.cancel_task(task_id)  # again: nothing changes, no error
    assert client.get_task(task_id).state == "CANCELED"


def test_cancel_of_a_finished_task_changes_nothing(client: tes.HTTPClient) -> None:
    done = pytes_run(client, tes.Task(executors=[tes.Executor(image=IMAGE, command=["echo", "x"])]))
    client.cancel_task(done.id)
    assert client.get_task(done.id, view="FULL") == done


# -- executors ----------------------------------------------------------------------------


def test_executor_error_stops_unless_ignore_error(client: tes.HTTPClient) -> None:
    failed = pytes_run(
        client, tes.Task(executors=[pytes_sh("echo first; exit 3"), pytes_sh("echo never")])
    )
    assert failed.state == "EXECUTOR_ERROR"
    assert [(e.stdout, e.exit_code) for e in failed.logs[0].logs] == [("first\n", 3)]

    tolerated = pytes_run(
        client,
        tes.Task(
            executors=[pytes_sh("echo first; exit 3", ignore_error=True), pytes_sh("echo second")]
        ),
    )
    assert tolerated.state == "COMPLETE"
    assert tolerated.executors[0].ignore_error is True
    assert [(e.stdout, e.exit_code) for e in tolerated.logs[0].logs] == [
        ("first\n", 3),
        ("second\n", 0),
    ]


@requires_bwrap
def test_volumes_env_workdir_stdin_stdout_stderr(client: tes.HTTPClient) -> None:
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(path="/in/lines.txt", content="one\ntwo\nthree\n")],
            volumes=["/shared"],
            executors=[
                pytes_sh(
                    'echo "$GREETING" > /shared/msg; pwd',
                    env={"GREETING": "hello volume"},
                    workdir="/work/dir",
                    stdout="/out/first.stdout",
                ),
                pytes_sh(
                    'cat /shared/msg; wc -l; echo "[$GREETING]"; echo oops >&2',
                    stdin="/in/lines.txt",
                    stderr="/out/second.stderr",
                ),
                pytes_sh("cat /out/first.stdout /out/second.stderr"),
            ],
        ),
    )
    assert task.state == "COMPLETE", task.logs
    first, second, third = task.logs[0].logs
    assert first.stdout == "/work/dir\n"  # the log shows what went to the stdout file
    assert second.stdout == "hello volume\n3\n[]\n"  # env is per executor
    assert second.stderr == "oops\n"
    assert third.stdout == "/work/dir\noops\n"  # the files are in the task's filesystem
    assert task.volumes == ["/shared"]
    assert task.executors[0].env == {"GREETING": "hello volume"}
    assert (task.executors[0].workdir, task.executors[1].stdin) == ("/work/dir", "/in/lines.txt")


# -- inputs and outputs -------------------------------------------------------------------


@requires_bwrap
def test_inputs_content_file_directory_and_http(
    client: tes.HTTPClient, allowed_dir: Path, http_files: tuple[str, Path]
) -> None:
    tag = uid()
    (allowed_dir / f"in-{tag}.txt").write_text("from file\n")
    tree = allowed_dir / f"tree-{tag}"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("tree a\n")
    (tree / "sub" / "b.txt").write_text("tree b\n")
    base, root = http_files
    (root / f"web-{tag}.txt").write_text("from web\n")

    inputs = [
        tes.Input(path="/in/content.txt", content="inline\n"),
        tes.Input(url=(allowed_dir / f"in-{tag}.txt").as_uri(), path="/in/file.txt"),
        tes.Input(url=tree.as_uri(), path="/in/tree", type="DIRECTORY"),
        tes.Input(url=f"{base}/web-{tag}.txt", path="/in/web.txt"),
    ]
    task = pytes_run(
        client,
        tes.Task(
            inputs=inputs,
            executors=[
                pytes_sh(
                    "cat /in/content.txt /in/file.txt /in/web.txt /in/tree/a.txt /in/tree/sub/b.txt"
                )
            ],
        ),
    )
    assert task.state == "COMPLETE", task.logs
    assert task.logs[0].logs[0].stdout == "inline\nfrom file\nfrom web\ntree a\ntree b\n"
    basic = client.get_task(task.id, view="BASIC")
    assert [(i.url, i.path, i.type) for i in basic.inputs] == [
        (None, "/in/content.txt", "FILE"),
        (inputs[1].url, "/in/file.txt", "FILE"),
        (inputs[2].url, "/in/tree", "DIRECTORY"),
        (inputs[3].url, "/in/web.txt", "FILE"),
    ]

    # A file:// URL outside the allowed directories is refused, with the reason.
    refused = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url="file:///etc/hostname", path="/in/h")],
            executors=[tes.Executor(image=IMAGE, command=["true"])],
        ),
    )
    assert refused.state == "SYSTEM_ERROR"
    assert any("allowed" in line for line in refused.logs[0].system_logs), refused.logs


@requires_bwrap
def test_file_directory_and_wildcard_outputs(client: tes.HTTPClient, allowed_dir: Path) -> None:
    dest = allowed_dir / f"out-{uid()}"
    script = (
        "printf result > /out/result.txt; "
        "mkdir -p /out/dir/sub; printf aa > /out/dir/a.txt; printf bbb > /out/dir/sub/b.txt; "
        "mkdir -p /out/many; printf 1 > /out/many/x.csv; printf 22 > /out/many/y.csv; "
        "printf skip > /out/many/z.txt"
    )
    task = pytes_run(
        client,
        tes.Task(
            outputs=[
                tes.Output(url=(dest / "result.txt").as_uri(), path="/out/result.txt"),
                tes.Output(url=(dest / "dir").as_uri(), path="/out/dir", type="DIRECTORY"),
                tes.Output(
                    url=(dest / "csv").as_uri(), path="/out/many/*.csv", path_prefix="/out/many"
                ),
            ],
            executors=[pytes_sh(script)],
        ),
    )
    assert task.state == "COMPLETE", task.logs
    assert (dest / "result.txt").read_text() == "result"
    assert (dest / "dir" / "a.txt").read_text() == "aa"
    assert (dest / "dir" / "sub" / "b.txt").read_text() == "bbb"
    assert sorted(p.name for p in (dest / "csv").iterdir()) == ["x.csv", "y.csv"]

    outputs = task.logs[0].outputs
    assert all(isinstance(o, tes.OutputFileLog) for o in outputs)
    assert sorted((o.path, o.url, o.size_bytes) for o in outputs) == sorted(
        [
            ("/out/result.txt", (dest / "result.txt").as_uri(), 6),
            ("/out/dir/a.txt", (dest / "dir").as_uri() + "/a.txt", 2),
            ("/out/dir/sub/b.txt", (dest / "dir").as_uri() + "/sub/b.txt", 3),
            ("/out/many/x.csv", (dest / "csv").as_uri() + "/x.csv", 1),
            ("/out/many/y.csv", (dest / "csv").as_uri() + "/y.csv", 2),
        ]
    )


# -- URL prefixes and errors --------------------------------------------------------------


def test_pytes_prefixes_all_work(server: Server) -> None:
    # py-tes 1.x tries <url>/ga4gh/tes/v1, then <url>/v1, then <url> itself.
    probe = tes.HTTPClient(server.url)
    assert probe.urls == [server.url + "/ga4gh/tes/v1", server.url + "/v1", server.url]

    def exercise(c: tes.HTTPClient) -> None:
        assert c.get_service_info().type["artifact"] == "tes"
        task_id = c.create_task(tes.Task(executors=[tes.Executor(image=IMAGE, command=["true"])]))
        assert pytes_final(c, task_id).state == "COMPLETE"
        assert task_id in {t.id for t in c.list_tasks(page_size=2048).tasks}
        c.cancel_task(task_id)

    # Each prefix on its own (no fallback to hide a broken one).
    for prefix in ("/ga4gh/tes/v1", "/v1"):
        pinned = tes.HTTPClient(server.url)
        pinned.urls = [server.url + prefix]
        exercise(pinned)
    # Users also pass the full base URL from the docs; py-tes's fallbacks then reach it.
    for base in (server.url + "/ga4gh/tes/v1", server.url + "/v1/", server.url + "/"):
        exercise(tes.HTTPClient(base, timeout=30))


def test_errors_surface_as_http_errors(client: tes.HTTPClient) -> None:
    with pytest.raises(requests.HTTPError) as err:
        client.get_task(str(uuid.uuid4()))
    assert err.value.response.status_code == 404

    # 4xx on create fails at once (py-tes does not retry other prefixes, so no duplicates).
    bad = tes.Task(executors=[tes.Executor(image=IMAGE, command=["true"], workdir="relative")])
    with pytest.raises(requests.HTTPError) as err:
        client.create_task(bad)
    assert err.value.response.status_code == 400
    body = err.value.response.json()
    assert body["code"] == "invalid_request"
    assert any("workdir" in e["where"] for e in body["errors"])
