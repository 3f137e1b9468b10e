"""Migration 0007: owners written before namespaces get one, by the site's settings.

A real server writes jobs, events, a sandbox, an idempotency record and tokens; Alembic
takes the database back to 0006 (plain owners, as an old release wrote them); the server
starts again and every caller still finds their own jobs, and only those.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from jobgate.store.database import _alembic_config, make_engine
from tests.auth.conftest import AUDIENCE, SUBMIT_GROUP, add_basic_user, bearer, make_token
from tests.auth.issuer import Issuer
from tests.conftest import PG_URL, Server, postgres_reachable

HELD = {"name": "old", "script": "true", "hold": True}


async def _pg(sql: str) -> None:
    engine = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"jg_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f"CREATE DATABASE {name}"))
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_pg(f"DROP DATABASE {name} WITH (FORCE)"))


def query(url: str, sql: str) -> set[Any]:
    """The first column of ``sql``'s rows."""

    async def run() -> set[Any]:
        engine = make_engine(url)
        async with engine.connect() as conn:
            got = {r[0] for r in (await conn.execute(text(sql))).all()}
        await engine.dispose()
        return got

    return asyncio.run(run())


def downgrade_to_0006(url: str) -> None:
    async def run() -> None:
        engine = make_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(_alembic_config(c), "0006"))
        await engine.dispose()

    asyncio.run(run())


def owners(url: str) -> dict[str, set[Any]]:
    return {
        "jobs": query(url, "SELECT DISTINCT owner FROM jobs"),
        "events": query(url, "SELECT DISTINCT owner FROM job_events WHERE owner IS NOT NULL"),
        "sandboxes": query(url, "SELECT DISTINCT owner FROM sandboxes"),
        "tokens": query(url, "SELECT DISTINCT owner FROM service_tokens"),
        "idempotency": query(url, "SELECT DISTINCT scope FROM idempotency_keys"),
    }


def test_existing_owners_get_the_namespace_the_settings_imply(
    tmp_path: Path, database_url: str, issuer: Issuer, second_issuer: Issuer
) -> None:
    users = tmp_path / "users"
    add_basic_user(users, "carol", "carol-pw", SUBMIT_GROUP)
    env = {
        "JOBGATE_AUTH": "oidc,token,basic",
        "JOBGATE_DATABASE_URL": database_url,
        "JOBGATE_OIDC_ISSUERS": f"iam={issuer.url}",
        "JOBGATE_OIDC_AUDIENCE": AUDIENCE,
        "JOBGATE_OIDC_GROUPS_CLAIM": "wlcg.groups",
        "JOBGATE_SUBMIT_GROUPS": SUBMIT_GROUP,
        "JOBGATE_BASIC_USERS_FILE": str(users),
        "JOBGATE_RUNTIME": "process",
    }
    data = tmp_path / "data"
    srv = Server(data, env).start()
    try:
        admin = (data / "admin-token").read_text().strip()
        alice = bearer(issuer.token("alice", groups=[SUBMIT_GROUP]))
        robot = bearer(make_token(srv, admin, "robot", groups=[SUBMIT_GROUP]))
        jobs_url = srv.url + "/api/v1/jobs"
        keyed = {**alice, "Idempotency-Key": "k1"}
        jobs = {
            "alice": httpx.post(jobs_url, json=HELD, headers=keyed).json(),
            "carol": httpx.post(jobs_url, json=HELD, auth=("carol", "carol-pw")).json(),
            "admin": httpx.post(jobs_url, json=HELD, headers=bearer(admin)).json(),
            "robot": httpx.post(jobs_url, json=HELD, headers=robot).json(),
        }
        up = httpx.post(srv.url + "/api/v1/sandboxes", content=b"old input", headers=alice)
        assert up.status_code in (200, 201), up.text
    finally:
        srv.stop()
    assert {j["owner"] for j in jobs.values()} == {
        "iam:alice",
        "basic:carol",
        "jobgate:admin",
        "token:robot",
    }
    downgrade_to_0006(database_url)
    old = owners(database_url)
    assert old["jobs"] == {"alice", "carol", "admin", "robot"}, old
    assert old["sandboxes"] == {"alice"} and old["idempotency"] == {"alice"}, old

    # Two issuers and no rule: no safe guess, the server refuses and says what to set.
    two = {**env, "JOBGATE_OIDC_ISSUERS": f"iam={issuer.url},egi={second_issuer.url}"}
    with pytest.raises(RuntimeError, match="JOBGATE_LEGACY_OWNER_NAMESPACE"):
        Server(data, two).start()
    assert owners(database_url) == old  # nothing half-done

    srv = Server(data, env).start()  # one issuer: old names are its users (or basic users)
    jobs_url = srv.url + "/api/v1/jobs"
    try:
        new = owners(database_url)
        assert new["jobs"] == {"iam:alice", "basic:carol", "jobgate:admin", "iam:robot"}, new
        assert new["events"] <= new["jobs"] and new["events"], new
        assert new["sandboxes"] == {"iam:alice"} and new["idempotency"] == {"iam:alice"}, new
        assert "jobgate:admin" in new["tokens"] and "iam:robot" in new["tokens"], new

        def sees(job: str, **how: Any) -> int:
            return httpx.get(f"{jobs_url}/{jobs[job]['id']}", **how).status_code

        assert sees("alice", headers=alice) == 200
        assert sees("carol", auth=("carol", "carol-pw")) == 200
        assert sees("carol", headers=bearer(issuer.token("carol"))) == 404
        assert sees("admin", headers=bearer(issuer.token("admin"))) == 404
        assert sees("admin", headers=bearer(admin)) == 200
        # An old token keeps acting for the owner its name now has: its jobs are still its.
        assert sees("robot", headers=robot) == 200
        # The idempotency record still answers alice's retry with the first job.
        again = httpx.post(jobs_url, json=HELD, headers=keyed)
        assert again.headers.get("idempotent-replayed") == "true", again.text
        assert again.json()["id"] == jobs["alice"]["id"]
    finally:
        srv.stop()
