"""The ``jobgate`` CLI through typer's CliRunner against a live ``jobgate serve``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from jobgate import __version__
from jobgate.cli import app
from jobgate.client import Client
from tests.conftest import Server, free_port

pytestmark = pytest.mark.usefixtures("isolated_config")

Run = Callable[..., Result]


@pytest.fixture()
def cli(server: Server) -> Run:
    """``cli("ls", "--json")`` runs ``jobgate --url <server> ls --json``."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, url: str | None = server.url) -> Result:
        prefix = ["--url", url] if url else []
        return runner.invoke(app, [*prefix, *args], input=input)

    return run


@pytest.fixture()
def jg(server: Server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tag() -> str:
    return uuid.uuid4().hex[:12]


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- server commands are unchanged -------------------------------------------------------


def test_version_and_help() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["version"]).stdout.strip() == __version__
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("serve", "submit", "run", "ls", "status", "logs", "wait", "summary"):
        assert command in top.stdout
    assert "--install-completion" in top.stdout  # shell completion
    assert "--data-dir" in runner.invoke(app, ["serve", "--help"]).stdout
    assert "i=0..9" in runner.invoke(app, ["submit", "--help"]).stdout


# -- run ---------------------------------------------------------------------------------


def test_run_prints_output_and_exits_with_the_job_exit_code(cli: Run) -> None:
    ok = cli("run", "--", "echo", "-n", "hello")
    assert ok.exit_code == 0 and ok.stdout == "hello"
    failed = cli("run", "sh", "-c", "echo out; echo err >&2; exit 7")  # no -- needed
    assert failed.exit_code == 7
    assert failed.stdout == "out\n" and failed.stderr == "err\n"
    env = cli(
        "run", "--env", "GREETING=hi there", "--label", "k=v", "--", "sh", "-c", "echo $GREETING"
    )
    assert env.stdout == "hi there\n"


def test_run_json_and_timeout(cli: Run, jg: Client) -> None:
    done = as_json(cli("--json", "run", "--name", "j", "--", "echo", "x"))
    assert (done["name"], done["state"]) == ("j", "COMPLETE")
    assert done["logs"][0]["logs"][0]["stdout"] == "x\n"
    slow = cli("run", "--timeout", "0.5", "--label", "t=timeout", "--", "sleep", "30")
    assert slow.exit_code == 124
    assert "not final after 0.5s" in slow.stderr
    job = jg.wait(next(jg.iter_search([("labels.t", "timeout")], fields=["id"]))["id"], 30)
    assert job.state == "CANCELED"


# -- submit ------------------------------------------------------------------------------


def test_submit_one_job_prints_its_id(cli: Run, jg: Client, tmp_path: Path) -> None:
    result = cli("submit", write(tmp_path, "name: one\nscript: echo one\n"))
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert jg.wait(job_id, 30).stdout == "one\n"
    from_stdin = as_json(cli("submit", "--json", "-", input='{"name": "stdin", "script": "true"}'))
    assert from_stdin["name"] == "stdin" and from_stdin["id"]


def test_submit_param_expands_every_combination(cli: Run, jg: Client, tmp_path: Path) -> None:
    t = tag()
    file = write(
        tmp_path, f"name: p-{{{{ i }}}}-{{{{ s }}}}\nscript: echo {{{{ i }}}}\nlabels: {{t: {t}}}\n"
    )
    result = cli("submit", file, "--param", "i=0..2", "-p", "s=a,b")
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 6 and "submitted 6 of 6 jobs in group" in result.stderr
    names = {r["name"] for r in as_json(cli("ls", "--json", "--label", f"t={t}"))}
    assert names == {f"p-{i}-{s}" for i in range(3) for s in "ab"}
    stepped = as_json(cli("--json", "submit", file, "-p", "i=0..9..5"))
    assert [r["state"] for r in stepped["results"]] == ["QUEUED", "QUEUED"]
    assert stepped["group"] and stepped["failed"] == 0
    jg.wait(ids + [r["id"] for r in stepped["results"]], 60)


def test_submit_parametric_document_and_wait(cli: Run, tmp_path: Path) -> None:
    doc = {"job": {"name": "w{{ n }}", "script": "echo {{ n }}"}, "parameters": {"n": [1, 2]}}
    result = cli("--json", "submit", "--wait", write(tmp_path, json.dumps(doc), "p.json"))
    jobs = as_json(result)
    assert sorted(j["logs"][0]["logs"][0]["stdout"] for j in jobs) == ["1\n", "2\n"]
    table = cli("submit", "-w", write(tmp_path, "script: exit 4\n"))
    assert table.exit_code == 1 and "EXECUTOR_ERROR" in table.stdout


def test_submit_list_reports_failed_items(cli: Run, tmp_path: Path) -> None:
    file = write(tmp_path, "- script: echo ok\n- name: 5\n  script: x\n")
    result = cli("submit", file)
    assert result.exit_code == 1
    assert len(result.stdout.split()) == 1  # the valid job's id
    assert "body.jobs[1].name: Input should be a valid string" in result.stderr
    out = json.loads(cli("--json", "submit", file).stdout)
    assert [("error" in r) for r in out["results"]] == [False, True]
    assert out["results"][1]["error"]["errors"][0]["where"] == "body.jobs[1].name"


def test_submit_usage_errors(cli: Run, tmp_path: Path) -> None:
    file = write(tmp_path, "script: echo {{ i }}\n")
    assert cli("submit", file, "-p", "i=3..1").exit_code == 2
    assert cli("submit", file, "-p", "nonsense").exit_code == 2
    assert cli("submit", file, "-p", "i=1", "-p", "i=2").exit_code == 2
    assert cli("submit", str(tmp_path / "missing.yaml")).exit_code == 2
    assert cli("submit", write(tmp_path, "name: [", "bad.yaml")).exit_code == 2
    assert cli("submit", write(tmp_path, "42", "n.yaml")).exit_code == 2
    invalid = cli("submit", write(tmp_path, "name: x\n", "nojob.yaml"))
    assert invalid.exit_code == 1 and "error:" in invalid.stderr and "script" in invalid.stderr
    as_error = cli("--json", "submit", write(tmp_path, "name: 5\nscript: x\n", "n5.yaml"))
    assert json.loads(as_error.stderr)["error"]["status"] == 400


# -- reading -----------------------------------------------------------------------------


def test_ls_filters_and_outputs(cli: Run, jg: Client) -> None:
    t = tag()
    ids = jg.submit_bulk(
        [{"name": f"ls-{i}", "script": "true", "labels": {"t": t}, "hold": True} for i in range(3)]
    ).ids
    rows = as_json(cli("ls", "--json", "--label", f"t={t}"))
    assert [r["id"] for r in rows] == ids[::-1]
    assert cli("ls", "-q", "-l", f"t={t}", "--limit", "2").stdout.split() == ids[:0:-1]
    assert len(as_json(cli("ls", "--json", "-l", f"t={t}", "--name", "LS-*"))) == 3
    assert [r["name"] for r in as_json(cli("ls", "--json", "-l", f"t={t}", "-n", "ls-1"))] == [
        "ls-1"
    ]
    assert as_json(cli("ls", "--json", "-l", f"t={t}", "--state", "complete,running")) == []
    table = cli("ls", "-l", f"t={t}", "-s", "PAUSED")
    assert table.exit_code == 0 and "ls-2" in table.stdout and "PAUSED" in table.stdout
    assert "no jobs match" in cli("ls", "-l", f"t=none-{t}").stderr
    assert cli("ls", "--state", "bogus").exit_code == 2
    jg.delete_many(ids)


def test_status_events_logs(cli: Run, jg: Client) -> None:
    job = jg.wait(jg.submit({"name": "st", "script": "echo so; echo se >&2; exit 3"}).id, 30)
    table = cli("status", job.id)
    assert table.exit_code == 0 and "EXECUTOR_ERROR" in table.stdout and " 3 " in table.stdout
    both = cli("--json", "status", job.id, "nope")
    assert both.exit_code == 1
    assert [j["id"] for j in json.loads(both.stdout)] == [job.id]
    assert json.loads(both.stderr)["error"]["code"] == "not_found"
    events = as_json(cli("events", "--json", job.id))
    assert (events[0]["state"], events[-1]["state"]) == ("QUEUED", "EXECUTOR_ERROR")
    assert "dispatcher" in cli("events", job.id).stdout
    assert cli("logs", job.id).stdout == "so\n"
    assert cli("logs", "--stderr", job.id).stdout == "se\n"
    assert cli("logs", "nope").exit_code == 1


def test_logs_follow(cli: Run, jg: Client) -> None:
    job = jg.submit({"script": "echo a; sleep 0.5; echo b"})
    result = cli("logs", "-f", job.id)
    assert result.exit_code == 0 and result.stdout == "a\nb\n"


def test_summary(cli: Run, jg: Client) -> None:
    t = tag()
    jg.submit_bulk([{"script": "true", "labels": {"t": t}, "hold": True}] * 2)
    groups = as_json(cli("summary", "--json", "--by", "state,labels.t", "-l", f"t={t}"))
    assert groups == [{"state": "PAUSED", "labels.t": t, "count": 2}]
    table = cli("summary", "--by", "state", "-l", f"t={t}")
    assert "PAUSED" in table.stdout and "2" in table.stdout


def test_wait(cli: Run, jg: Client) -> None:
    ok = jg.submit({"script": "true"}).id
    bad = jg.submit({"script": "exit 1"}).id
    assert cli("wait", ok).exit_code == 0
    mixed = cli("--json", "wait", ok, bad)
    assert mixed.exit_code == 1
    assert [j["state"] for j in json.loads(mixed.stdout)] == ["COMPLETE", "EXECUTOR_ERROR"]
    slow = jg.submit({"script": "sleep 30"}).id
    timed_out = cli("wait", "--timeout", "0.5", slow)
    assert timed_out.exit_code == 124 and "not final" in timed_out.stderr
    jg.cancel(slow)
    assert cli("wait", "nope").exit_code == 1


# -- control -----------------------------------------------------------------------------


def test_control_commands_report_each_item(cli: Run, jg: Client) -> None:
    a, b = jg.submit_bulk([{"script": "exit 1", "hold": True}] * 2).ids
    started = cli("start", a)
    assert started.exit_code == 0 and f"{a}  QUEUED" in started.stdout
    jg.wait(a, 30)
    resched = cli("reschedule", a, "nope")
    assert resched.exit_code == 1
    assert f"{a}  QUEUED" in resched.stdout and "nope  error: no task with id" in resched.stderr
    jg.wait(a, 30)
    canceled = as_json(cli("cancel", "--json", b))
    assert canceled["results"] == [{"index": 0, "id": b, "state": "CANCELED"}]
    deleted = cli("delete", a, b)
    assert deleted.exit_code == 0 and f"{a}  deleted" in deleted.stdout
    running = jg.submit({"script": "sleep 30"}).id
    refused = cli("--json", "delete", running)
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["results"][0]["error"]["status"] == 409
    assert cli("cancel", running).exit_code == 0


# -- where the server is -----------------------------------------------------------------


def test_connection_refused_is_explained(cli: Run) -> None:
    result = cli("ls", url=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "cannot reach jobgate at http://127.0.0.1:" in result.stderr
    assert "is `jobgate serve` running?" in result.stderr


def test_url_from_env_and_config_file(
    cli: Run, server: Server, isolated_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBGATE_URL", server.url)
    assert cli("ls", "--limit", "1", url=None).exit_code == 0
    monkeypatch.delenv("JOBGATE_URL")
    isolated_config.write_text(f'url = "{server.url}"\ntoken = "t"\n')
    assert cli("ls", "--limit", "1", url=None).exit_code == 0
    isolated_config.write_text("url = [")
    broken = cli("ls", url=None)
    assert broken.exit_code == 1 and "config" in broken.stderr
