"""The store side of access control, on SQLite and PostgreSQL: token rows, job credentials,
and the visibility condition of list and search queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.auth.credentials import JobCredentials
from jobgate.auth.identity import Scope
from jobgate.auth.secrets import SecretBox
from jobgate.auth.tokens import ServiceTokens
from jobgate.domain.models import new_job_id, now
from jobgate.domain.query import SearchRequest
from jobgate.domain.states import State
from jobgate.store import search
from jobgate.store.access import Database
from jobgate.store.jobs import JobStore, ListQuery, NewJob
from jobgate.store.schema import job_credentials
from jobgate.store.tokens import TokenStore
from jobgate.store.visibility import Visibility
from tests.store.conftest import engine  # noqa: F401 - the SQLite/PostgreSQL fixture


@pytest.fixture()
async def store(engine: AsyncEngine) -> AsyncIterator[JobStore]:  # noqa: F811
    s = JobStore(Database(engine))
    yield s
    s.close()


def job(owner: str | None, share: str | None = None, credential: str | None = None) -> NewJob:
    spec = {"executors": [{"image": "a", "command": ["true"]}]}
    return NewJob(
        id=new_job_id(), spec=spec, backend="local", owner=owner, share_group=share,
        credential=credential,
    )  # fmt: skip


async def test_credentials_are_stored_encrypted_and_go_with_the_job(store: JobStore) -> None:
    box = SecretBox(Fernet.generate_key())
    carried, plain = job("alice", credential=box.encrypt("the-token")), job("alice")
    await store.create([carried, plain])
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(job_credentials))).all()
    assert [r.job_id for r in rows] == [carried.id]
    assert "the-token" not in rows[0].secret
    creds = JobCredentials(store, box)
    assert await creds.reveal(carried.id) == "the-token"
    assert await creds.reveal(plain.id) is None
    assert await JobCredentials(store, SecretBox(Fernet.generate_key())).reveal(carried.id) is None
    await store.delete_in_states([carried.id], {State.QUEUED})
    assert await store.credential(carried.id) is None


async def test_visibility_limits_pages_and_searches(store: JobStore) -> None:
    mine, shared, other = job("alice"), job("bob", "team"), job("carol", "elsewhere")
    await store.create([mine, shared, other])
    alice = Visibility("alice", frozenset({"team"}))
    page, _ = await store.page(ListQuery(owner=alice))
    assert {r.id for r in page} == {mine.id, shared.id}
    page, _ = await store.page(ListQuery(owner=Visibility("alice")))
    assert {r.id for r in page} == {mine.id}
    page, _ = await store.page(ListQuery(owner=Visibility(None)))
    assert page == []  # no name owns nothing (not the jobs without owner)
    items, _ = await search.search(store.db, SearchRequest(), ["id"], alice)
    assert {i["id"] for i in items} == {mine.id, shared.id}
    access = await store.access_of([mine.id, shared.id, "nope"])
    assert access == {mine.id: ("alice", None), shared.id: ("bob", "team")}


async def test_service_tokens_hashed_expiring_revocable(store: JobStore) -> None:
    tokens = ServiceTokens(TokenStore(store.db))
    row, secret = await tokens.create(owner="bot", scopes={Scope.READ}, groups=("/g",))
    caller = await tokens.authenticate(secret)
    assert caller is not None and caller.name == "bot" and caller.scopes == {Scope.READ}
    assert caller.groups == {"g"} and secret not in repr(caller)
    assert await tokens.authenticate(secret + "x") is None
    _, old = await tokens.create(
        owner="bot", scopes={Scope.SUBMIT}, expires_at=now() - timedelta(1)
    )
    assert await tokens.authenticate(old) is None
    assert await tokens.store.revoke(row.id) is not None
    assert await tokens.authenticate(secret) is None
    assert await tokens.store.revoke("tok_missing") is None
    assert [r.id for r in await tokens.store.list()] == []
    assert len(await tokens.store.list(include_inactive=True)) == 2
