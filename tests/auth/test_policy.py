"""Sharing by group, rate limits, credentials at rest, and secrets kept out of answers and logs."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from jobgate.client.config import resolve
from tests.auth.conftest import SHARE_GROUP, SUBMIT_GROUP, bearer, make_token
from tests.auth.issuer import Issuer
from tests.conftest import Server, free_port

HELD = {"name": "policy", "script": "true", "hold": True}


def test_jobs_are_shared_with_the_submitters_share_group(
    auth_server: Server, admin_token: str
) -> None:
    team = [SUBMIT_GROUP, SHARE_GROUP]
    kim = bearer(make_token(auth_server, admin_token, "kim", groups=team))
    lee = bearer(make_token(auth_server, admin_token, "lee", groups=team))
    bob = bearer(make_token(auth_server, admin_token, "bob", groups=[SUBMIT_GROUP]))
    url = auth_server.url + "/api/v1/jobs"
    job = httpx.post(url, json=HELD, headers=kim).json()
    assert job["owner"] == "token:kim"
    assert httpx.get(f"{url}/{job['id']}", headers=lee).status_code == 200
    assert httpx.get(f"{url}/{job['id']}", headers=bob).status_code == 404
    search = {"filters": [{"field": "id", "op": "eq", "value": job["id"]}]}
    assert len(httpx.post(f"{url}/search", json=search, headers=lee).json()["jobs"]) == 1
    assert httpx.post(f"{url}/search", json=search, headers=bob).json()["jobs"] == []
    # Members control the shared job too.
    assert httpx.post(f"{url}/{job['id']}/cancel", headers=lee).status_code == 200
    # Jobs of a caller outside the share groups stay private.
    private = httpx.post(url, json=HELD, headers=bob).json()
    assert httpx.get(f"{url}/{private['id']}", headers=lee).status_code == 404


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("limited") / "data",
        {"JOBGATE_AUTH": "token", "JOBGATE_SUBMIT_RATE": "30", "JOBGATE_SUBMIT_BURST": "2"},
    ).start()
    yield srv
    srv.stop()


def test_submission_rate_limit_is_429_with_retry_after(limited: Server) -> None:
    admin = (limited.data_dir / "admin-token").read_text().strip()
    alice = bearer(make_token(limited, admin, "alice"))
    bob = bearer(make_token(limited, admin, "bob"))
    url = limited.url + "/api/v1/jobs"
    assert [httpx.post(url, json=HELD, headers=alice).status_code for _ in range(2)] == [201, 201]
    over = httpx.post(url, json=HELD, headers=alice)
    assert over.status_code == 429, over.text
    assert over.json()["code"] == "too_many_requests"
    wait = int(over.headers["retry-after"])
    assert 1 <= wait <= 2  # 30 a minute: one every 2 s
    tes = httpx.post(
        limited.url + "/ga4gh/tes/v1/tasks",
        json={"executors": [{"image": "alpine", "command": ["true"]}]},
        headers=alice,
    )
    assert tes.status_code == 429 and "retry-after" in tes.headers
    # Per caller: bob is not slowed down by alice.
    assert httpx.post(url, json=HELD, headers=bob).status_code == 201
    # Reading is not limited.
    assert httpx.get(limited.url + "/api/v1/me", headers=alice).status_code == 200
    time.sleep(wait)
    assert httpx.post(url, json=HELD, headers=alice).status_code == 201


def test_tokens_and_passwords_never_appear_in_answers_or_logs(
    auth_server: Server, admin_token: str, issuer: Issuer
) -> None:
    service = make_token(auth_server, admin_token, "leaky", groups=[SUBMIT_GROUP])
    jwt_token = issuer.token("leaky-oidc", groups=[SUBMIT_GROUP])
    revoked = make_token(auth_server, admin_token, "gone")
    secrets = {
        "admin": admin_token,
        "service": service,
        "oidc": jwt_token,
        "revoked": revoked,
        "password": "carol-pw",
    }
    for row in httpx.get(auth_server.url + "/api/v1/tokens", headers=bearer(admin_token)).json()[
        "tokens"
    ]:
        if row["owner"] == "token:gone":
            httpx.delete(
                f"{auth_server.url}/api/v1/tokens/{row['id']}", headers=bearer(admin_token)
            )
    answers: list[httpx.Response] = []
    creds: list[dict[str, str]] = [
        bearer(admin_token),
        bearer(service),
        bearer(jwt_token),
        bearer(revoked),
        bearer(jwt_token + "x"),
        {"Authorization": "Basic " + base64.b64encode(b"carol:carol-pw").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"carol:wrong").decode()},
    ]
    task = {"name": "leak", "executors": [{"image": "alpine", "command": ["env"]}]}
    with httpx.Client(base_url=auth_server.url, timeout=30) as c:
        for h in creds:
            job = c.post("/api/v1/jobs", json={"name": "leak", "script": "env"}, headers=h)
            tes_task = c.post("/ga4gh/tes/v1/tasks", json=task, headers=h)
            ws = c.post(
                "/v1/worksteps",
                json={"container_image": "alpine", "executable_entrypoint": "env"},
                headers=h,
            )
            answers += [job, tes_task, ws]
            for r in (job, tes_task, ws):
                if r.status_code in (200, 201):
                    job_id = r.json()["id"]
                    for path in (
                        f"/api/v1/jobs/{job_id}",
                        f"/api/v1/jobs/{job_id}/events",
                        f"/ga4gh/tes/v1/tasks/{job_id}?view=FULL",
                        f"/v1/worksteps/{job_id}",
                        f"/api/v1/jobs/{job_id}/logs",
                    ):
                        answers.append(c.get(path, headers=h))
            answers.append(c.post("/api/v1/jobs/search", json={"limit": 50}, headers=h))
            answers.append(c.get("/ga4gh/tes/v1/tasks?view=FULL", headers=h))
            answers.append(c.get("/api/v1/me", headers=h))
            answers.append(c.get("/api/v1/tokens?all=true", headers=h))
            answers.append(c.get("/api/v1/jobs/nope", headers=h))
    assert any(r.status_code == 201 for r in answers) and any(r.status_code == 401 for r in answers)
    time.sleep(2)  # let the submitted jobs run (their `env` output is in the answers above)
    for name, secret in secrets.items():
        for r in answers:
            assert secret not in r.text, (name, r.request.url)
            assert secret not in str(r.headers), (name, r.request.url)
        assert secret not in auth_server.log(), name
    # The jobs' stored credential is there (this server forwards tokens to "local"), but only
    # encrypted: the database file holds no token in clear.
    with sqlite3.connect(auth_server.data_dir / "jobgate.db") as db:
        stored = [s for (s,) in db.execute("SELECT secret FROM job_credentials")]
    key = Fernet((auth_server.data_dir / "secret.key").read_bytes())
    plain = {key.decrypt(s.encode()).decode() for s in stored}
    assert {service, jwt_token} <= plain
    raw = b"".join(p.read_bytes() for p in auth_server.data_dir.glob("jobgate.db*"))
    for secret in (service, jwt_token, admin_token):
        assert secret.encode() not in raw
    assert os.stat(auth_server.data_dir / "secret.key").st_mode & 0o777 == 0o600


def test_default_is_token_auth_with_an_admin_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBGATE_")}
    srv = Server(tmp_path / "data", log_level="info")
    srv.env = {**env, "JOBGATE_RUNTIME": "process"}  # as `make run` starts it: no JOBGATE_AUTH
    srv.start()
    try:
        token_file = srv.data_dir / "admin-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert str(token_file) in srv.log() and token not in srv.log()
        assert httpx.get(srv.url + "/api/v1/jobs/x").status_code == 401
        assert httpx.get(srv.url + "/healthz").status_code == 200
        me = httpx.get(srv.url + "/api/v1/me", headers=bearer(token)).json()
        assert me["admin"] is True
    finally:
        srv.stop()
    # A restart keeps the admin token (it exists) instead of making another.
    srv.start()
    srv.stop()
    assert token_file.read_text().strip() == token
    # The client on this machine finds it when nothing else is configured.
    monkeypatch.delenv("JOBGATE_TOKEN", raising=False)
    monkeypatch.delenv("JOBGATE_URL", raising=False)
    monkeypatch.setenv("JOBGATE_DATA_DIR", str(srv.data_dir))
    assert resolve(path=tmp_path / "no-config.toml").token == token
    # Not for another server, nor when credentials are configured.
    assert resolve("http://elsewhere:8000", path=tmp_path / "x.toml").token is None
    assert resolve(user="carol", path=tmp_path / "x.toml").token is None


def serve(host: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobgate", "serve", "--host", host, "--port", str(free_port()),
         "--data-dir", str(tmp_path / "d")],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_none_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = serve("0.0.0.0", {"JOBGATE_AUTH": "none"}, tmp_path)
    assert result.returncode == 2
    assert "JOBGATE_AUTH_NONE_ANY_HOST" in result.stdout + result.stderr


def test_none_says_so_at_start_up(server: Server) -> None:
    assert "anonymous admin" in server.log()
    # And serves everyone as before authentication existed.
    me = httpx.get(server.url + "/api/v1/me").json()
    assert me == {"name": None, "method": "none", "scopes": ["admin", "read", "submit"],
                  "groups": [], "admin": True}  # fmt: skip


def test_oidc_without_audience_does_not_start(tmp_path: Path) -> None:
    result = serve(
        "127.0.0.1", {"JOBGATE_AUTH": "oidc", "JOBGATE_OIDC_ISSUERS": "https://x.example"}, tmp_path
    )
    assert result.returncode == 2
    assert "JOBGATE_OIDC_AUDIENCE" in result.stderr and "Traceback" not in result.stderr
