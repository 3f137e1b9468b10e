"""Basic users and service tokens end to end: the ``jobgate`` CLI and the py-tes client."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import tes
from typer.testing import CliRunner, Result

from jobgate.cli import app
from tests.auth.conftest import SUBMIT_GROUP, make_token
from tests.conftest import Server

pytestmark = pytest.mark.usefixtures("isolated_config")

IMAGE = "alpine"


def cli(server: Server, *args: str, **env: str) -> Result:
    return CliRunner().invoke(app, ["--url", server.url, *args], env=env)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def db_rows(server: Server, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "jobgate.db") as conn:
        return conn.execute(sql).fetchall()


# -- basic users ---------------------------------------------------------------------------


def test_basic_user_runs_jobs_through_the_cli(auth_server: Server) -> None:
    carol = {"JOBGATE_USER": "carol", "JOBGATE_PASSWORD": "carol-pw"}
    word = uuid.uuid4().hex
    result = cli(auth_server, "run", "--", "echo", word, **carol)
    assert result.exit_code == 0, result.output
    assert word in result.stdout
    me = as_json(cli(auth_server, "whoami", "--json", **carol))
    assert (me["name"], me["method"], me["groups"]) == ("basic:carol", "basic", [SUBMIT_GROUP])
    jobs = as_json(cli(auth_server, "ls", "--json", **carol))
    assert jobs and {j["owner"] for j in jobs} == {"basic:carol"}


def test_basic_wrong_password_and_missing_group(auth_server: Server) -> None:
    bad = cli(auth_server, "ls", JOBGATE_USER="carol", JOBGATE_PASSWORD="nope")
    assert bad.exit_code == 1
    assert "wrong user name or password" in bad.output
    nobody = cli(auth_server, "ls", JOBGATE_USER="nobody", JOBGATE_PASSWORD="x")
    assert nobody.exit_code == 1 and "wrong user name or password" in nobody.output
    dave = {"JOBGATE_USER": "dave", "JOBGATE_PASSWORD": "dave-pw"}
    assert cli(auth_server, "ls", **dave).exit_code == 0  # may read (their own: none)
    refused = cli(auth_server, "run", "--", "true", **dave)
    assert refused.exit_code == 1
    assert "submitting needs membership" in refused.output


def test_basic_user_through_py_tes(auth_server: Server) -> None:
    client = tes.HTTPClient(auth_server.url, timeout=30, user="carol", password="carol-pw")
    task_id = client.create_task(
        tes.Task(executors=[tes.Executor(image=IMAGE, command=["echo", "from py-tes"])])
    )
    task = client.wait(task_id, timeout=60)
    assert task.state == "COMPLETE"
    assert client.get_task(task_id, view="FULL").logs[0].logs[0].stdout == "from py-tes\n"
    wrong = tes.HTTPClient(auth_server.url, timeout=30, user="carol", password="bad")
    with pytest.raises(requests.HTTPError) as exc:
        wrong.get_task(task_id)
    assert exc.value.response.status_code == 401
    # Another user does not see the task at all.
    dave = tes.HTTPClient(auth_server.url, timeout=30, user="dave", password="dave-pw")
    with pytest.raises(requests.HTTPError) as exc:
        dave.get_task(task_id)
    assert exc.value.response.status_code == 404
    assert task_id not in [t.id for t in dave.list_tasks().tasks or []]


def test_the_users_file_is_read_again_when_it_changes(auth_server: Server) -> None:
    from tests.auth.conftest import add_basic_user

    users = Path(auth_server.env["JOBGATE_BASIC_USERS_FILE"])
    assert users.stat().st_mode & 0o777 == 0o600
    assert "carol-pw" not in users.read_text()  # hashed
    name = f"new{uuid.uuid4().hex[:6]}"
    assert cli(auth_server, "ls", JOBGATE_USER=name, JOBGATE_PASSWORD="pw1").exit_code == 1
    add_basic_user(users, name, "pw1")
    assert cli(auth_server, "ls", JOBGATE_USER=name, JOBGATE_PASSWORD="pw1").exit_code == 0


# -- service tokens --------------------------------------------------------------------------


def created(result: Result) -> dict[str, Any]:
    row: dict[str, Any] = as_json(result)
    assert row["token"].startswith("jgt_")
    return row


def test_service_token_lifecycle_through_the_cli(auth_server: Server, admin_token: str) -> None:
    admin = {"JOBGATE_TOKEN": admin_token}
    row = created(
        cli(auth_server, "token", "create", "--owner", "erin", "--group", SUBMIT_GROUP,
            "--name", "ci", "--json", **admin)
    )  # fmt: skip
    assert row["scopes"] == ["submit"] and row["expires_at"] is not None  # 90 days default
    erin = {"JOBGATE_TOKEN": row["token"]}
    word = uuid.uuid4().hex
    result = cli(auth_server, "run", "--", "echo", word, **erin)
    assert result.exit_code == 0 and word in result.stdout, result.output
    assert as_json(cli(auth_server, "whoami", "--json", **erin))["name"] == "token:erin"
    # Listed by id, never with the secret or its hash.
    listing = cli(auth_server, "token", "list", "--json", **admin)
    assert row["id"] in listing.stdout and row["token"] not in listing.stdout
    assert "hash" not in listing.stdout
    # Stored hashed.
    hashes = {h for (h,) in db_rows(auth_server, "SELECT token_hash FROM service_tokens")}
    assert hashlib.sha256(row["token"].encode()).hexdigest() in hashes
    assert not any(
        row["token"] in str(r) for r in db_rows(auth_server, "SELECT * FROM service_tokens")
    )
    # Only admins manage tokens.
    denied = cli(auth_server, "token", "list", **erin)
    assert denied.exit_code == 1 and "admins only" in denied.output
    # Revoked: refused at once.
    assert cli(auth_server, "token", "revoke", row["id"], **admin).exit_code == 0
    gone = cli(auth_server, "whoami", **erin)
    assert gone.exit_code == 1 and "unknown, expired or revoked" in gone.output
    assert row["id"] in cli(auth_server, "token", "list", "--all", **admin).stdout
    assert row["id"] not in cli(auth_server, "token", "list", **admin).stdout


def test_read_only_token_reads_but_cannot_submit(auth_server: Server, admin_token: str) -> None:
    admin = {"JOBGATE_TOKEN": admin_token}
    writer = make_token(auth_server, admin_token, "frank", groups=[SUBMIT_GROUP])
    job = as_json(cli(auth_server, "run", "--json", "--", "true", JOBGATE_TOKEN=writer))
    reader = created(
        cli(
            auth_server, "token", "create", "--owner", "frank", "--scope", "read", "--json", **admin
        )
    )["token"]
    seen = as_json(cli(auth_server, "status", job["id"], "--json", JOBGATE_TOKEN=reader))
    assert [j["id"] for j in seen] == [job["id"]]
    refused = cli(auth_server, "run", "--", "true", JOBGATE_TOKEN=reader)
    assert refused.exit_code == 1 and "may not submit" in refused.output
    assert cli(auth_server, "delete", job["id"], JOBGATE_TOKEN=reader).exit_code == 1


def test_an_expired_token_stops_working(auth_server: Server, admin_token: str) -> None:
    row = created(
        cli(auth_server, "token", "create", "--owner", "gus", "--expires", "2s", "--json",
            JOBGATE_TOKEN=admin_token)
    )  # fmt: skip
    assert cli(auth_server, "whoami", JOBGATE_TOKEN=row["token"]).exit_code == 0
    time.sleep(2.5)
    late = cli(auth_server, "whoami", JOBGATE_TOKEN=row["token"])
    assert late.exit_code == 1 and "unknown, expired or revoked" in late.output


def test_service_token_through_py_tes(auth_server: Server, admin_token: str) -> None:
    token = make_token(auth_server, admin_token, "hana", groups=[SUBMIT_GROUP])
    client = tes.HTTPClient(auth_server.url, timeout=30, token=token)
    task_id = client.create_task(
        tes.Task(executors=[tes.Executor(image=IMAGE, command=["echo", "bearer"])])
    )
    assert client.wait(task_id, timeout=60).state == "COMPLETE"
    assert task_id in [t.id for t in client.list_tasks().tasks or []]
    stranger = tes.HTTPClient(
        auth_server.url, timeout=30, token=make_token(auth_server, admin_token, "ivan")
    )
    with pytest.raises(requests.HTTPError) as exc:
        stranger.cancel_task(task_id)
    assert exc.value.response.status_code == 404
    anonymous = tes.HTTPClient(auth_server.url, timeout=30)
    assert anonymous.get_service_info().name == "jobgate"  # public
    with pytest.raises(requests.HTTPError) as exc:
        anonymous.list_tasks()
    assert exc.value.response.status_code == 401


def test_cli_bad_expiry_is_a_usage_error(auth_server: Server, admin_token: str) -> None:
    bad = cli(auth_server, "token", "create", "--expires", "soon", JOBGATE_TOKEN=admin_token)
    assert bad.exit_code == 2 and "--expires" in bad.output
