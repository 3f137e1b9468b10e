"""A row no current submission could store (NaN/Infinity in its JSON) stalls no loop.

Such a row exists when it was written before the API refused non-finite numbers, or by
another replica or version. The test writes one straight into the database of a stopped
gateway, as such a version would have, next to a good job, and starts the gateway: the
webhook router, the event stream and the dispatcher must serve the good job (and jobs
submitted afterwards), fail the bad one with a clear reason, and render it as valid JSON.
Runs on SQLite and, when reachable, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from jobgate.domain.models import new_job_id
from jobgate.store.database import make_engine
from jobgate.store.jobs import JobStore, NewJob
from tests.conftest import PG_URL, Server, postgres_reachable
from tests.support import wait_until
from tests.test_streams import messages
from tests.test_webhooks import ENV, LIFECYCLE, Receiver, states, submit


def strict_json(raw: str | bytes) -> Any:
    """Parse as a strict JSON parser would: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a response: not JSON")

    return json.loads(raw, parse_constant=refuse)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rcv = Receiver()
    yield rcv
    rcv.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for one gateway: a file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'jobgate.db'}"
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"bad_rows_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        eng = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        async with eng.connect() as conn:
            await conn.execute(text(sql))
        await eng.dispose()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


async def _store_like_an_old_version(url: str, jobs: list[NewJob], poisoned: str) -> None:
    """Insert ``jobs`` through the store; then make ``poisoned``'s spec hold non-finite
    numbers the way each database keeps them: SQLite the text Python's json writes
    (``Infinity``, ``NaN``), PostgreSQL's json type a number too large for a double."""
    eng = make_engine(url)
    store = JobStore(eng)
    try:
        await store.create(jobs)
        async with eng.begin() as conn:
            raw = (
                await conn.execute(text("SELECT spec FROM jobs WHERE id = :id"), {"id": poisoned})
            ).scalar_one()
            spec = raw if isinstance(raw, str) else json.dumps(raw)
            big, nan = ("Infinity", "NaN") if eng.dialect.name == "sqlite" else ("1e400", "-1e400")
            spec = spec.rstrip("}") + f',"resources":{{"ram_gb":{big}}},"x_note":[{nan}]}}'
            value = ":spec" if eng.dialect.name == "sqlite" else "CAST(:spec AS json)"
            await conn.execute(
                text(f"UPDATE jobs SET spec = {value} WHERE id = :id"),
                {"spec": spec, "id": poisoned},
            )
    finally:
        store.close()
        await eng.dispose()


def test_a_poisoned_row_stalls_no_background_loop(
    tmp_path: Path, receiver: Receiver, database: str
) -> None:
    srv = Server(tmp_path / "data", {**ENV, "JOBGATE_DATABASE_URL": database})
    srv.start()  # creates the schema and the webhook cursor
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            first = f"/ok/{new_job_id()}"
            job = client.get(f"/api/v1/jobs/{submit(client, receiver.url + first)}").json()
            wait_until(lambda: "COMPLETE" in states(receiver.delivered(first)), what="first job")
    finally:
        srv.stop()
    spec = {k: v for k, v in job["spec"].items() if k != "callback"}
    bad_path, good_path = f"/ok/bad-{new_job_id()}", f"/ok/good-{new_job_id()}"
    bad = NewJob(
        id=new_job_id(),
        spec={**spec, "callback": receiver.url + bad_path, "tags": {"who": "mallory"}},
        backend=job["backend"],
    )
    good = NewJob(
        id=new_job_id(), spec={**spec, "callback": receiver.url + good_path}, backend=job["backend"]
    )
    # The bad job heads the queue (older) and shares the webhook router's first batch.
    asyncio.run(_store_like_an_old_version(database, [bad, good], bad.id))

    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            # Another user's webhooks still arrive, in full: the router did not stall.
            wait_until(
                lambda: "COMPLETE" in states(receiver.delivered(good_path)), what="good webhooks"
            )
            assert states(receiver.delivered(good_path)) == LIFECYCLE
            later = f"/ok/later-{new_job_id()}"
            submit(client, receiver.url + later)
            wait_until(lambda: "COMPLETE" in states(receiver.delivered(later)), what="later job")

            # The dispatcher failed the bad job with a reason, and ran the others.
            wait_until(
                lambda: client.get(f"/api/v1/jobs/{bad.id}").json()["state"] == "SYSTEM_ERROR",
                what="the bad job to fail",
            )
            r = client.get(f"/api/v1/jobs/{bad.id}")
            assert r.status_code == 200
            shown = strict_json(r.content)
            assert "not finite" in shown["detail"] and "resources.ram_gb" in shown["detail"]
            assert any("not finite" in line for line in shown["logs"][-1]["system_logs"])
            assert shown["spec"]["resources"]["ram_gb"] is None
            assert shown["spec"]["x_note"] == [None]
            assert client.get(f"/api/v1/jobs/{good.id}").json()["state"] == "COMPLETE"
            # Its own events are delivered too, as valid JSON.
            wait_until(lambda: len(receiver.delivered(bad_path)) == 2, what="bad job's webhooks")
            assert states(receiver.delivered(bad_path)) == ["QUEUED", "SYSTEM_ERROR"]
            assert receiver.delivered(bad_path)[0].event["labels"] == {"who": "mallory"}

            # Every view of it is valid JSON.
            tes = client.get(f"/ga4gh/tes/v1/tasks/{bad.id}", params={"view": "FULL"})
            assert tes.status_code == 200
            assert strict_json(tes.content)["resources"]["ram_gb"] is None
            listing = client.get("/ga4gh/tes/v1/tasks", params={"view": "FULL"})
            assert listing.status_code == 200
            strict_json(listing.content)
            ws = client.get(f"/v1/worksteps/{bad.id}")
            assert ws.status_code == 200
            assert strict_json(ws.content)["system_parameters"]["memory_gb"] is None
            found = client.post("/api/v1/jobs/search", json={"fields": ["id", "spec"]})
            assert found.status_code == 200, found.text
            strict_json(found.content)

            # The event stream replays past the bad job's events and goes on.
            seen: dict[str, list[str]] = {}
            with client.stream("GET", "/api/v1/events/stream?after=0") as stream:
                assert stream.status_code == 200
                for m in messages(stream):
                    if "data" in m:
                        seen.setdefault(m["data"]["job_id"], []).append(m["data"]["state"])
                    if "SYSTEM_ERROR" in seen.get(bad.id, []) and "COMPLETE" in seen.get(
                        good.id, []
                    ):
                        break
            assert seen[good.id] == LIFECYCLE
    finally:
        srv.stop()


def test_rows_whose_spec_is_not_json_at_all_are_failed_and_skipped(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A spec even Python's parser refuses, on a queued and on a running job: the gateway
    still starts, fails both with a reason, gives up their webhooks (logged), shows them,
    and runs and reports the good job beside them."""
    srv = Server(tmp_path / "data", ENV, log_level="info")
    srv.start()  # the schema and the webhook cursor
    srv.stop()
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'jobgate.db'}"
    good_path = f"/ok/good-{new_job_id()}"
    spec: dict[str, Any] = {"executors": [{"image": "default", "command": ["true"]}]}
    queued, running = (
        NewJob(
            id=new_job_id(), spec={**spec, "callback": receiver.url + "/ok/never"}, backend="local"
        )
        for _ in range(2)
    )
    good = NewJob(
        id=new_job_id(), spec={**spec, "callback": receiver.url + good_path}, backend="local"
    )

    async def write() -> None:
        eng = make_engine(url)
        store = JobStore(eng)
        try:
            await store.create([queued, running, good])
            async with eng.begin() as conn:
                for job, state in ((queued, "QUEUED"), (running, "RUNNING")):
                    await conn.execute(
                        text("UPDATE jobs SET spec = :s, state = :state WHERE id = :id"),
                        {"s": '{"callback": "http://x/', "state": state, "id": job.id},
                    )
        finally:
            store.close()
            await eng.dispose()

    asyncio.run(write())
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            wait_until(lambda: "COMPLETE" in states(receiver.delivered(good_path)), what="good job")

            def shown() -> dict[str, Any]:
                r = client.post(
                    "/api/v1/jobs/search",
                    json={
                        "filters": [{"field": "id", "op": "in", "value": [queued.id, running.id]}],
                        "fields": ["id", "state", "detail"],
                    },
                )
                assert r.status_code == 200, r.text
                return {j["id"]: j for j in r.json()["jobs"]}

            wait_until(
                lambda: {j["state"] for j in shown().values()} == {"SYSTEM_ERROR"},
                what="both broken jobs to fail",
            )
            for job in shown().values():
                assert "stored spec is not JSON" in job["detail"], job
                # Still a job a user can look at (and delete), as valid JSON.
                r = client.get(f"/api/v1/jobs/{job['id']}")
                assert r.status_code == 200, r.text
                assert strict_json(r.content)["state"] == "SYSTEM_ERROR"
                assert client.delete(f"/api/v1/jobs/{job['id']}").status_code in (200, 204)
        assert not receiver.all("/ok/never")
        assert f"job {queued.id}: stored spec is not JSON" in srv.log()
    finally:
        srv.stop()
