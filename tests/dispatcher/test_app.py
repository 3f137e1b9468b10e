"""The whole app in-process (``httpx.ASGITransport``, no server process) over a fake
backend: what TES and native clients see of a job in a backend's queue, of transient
refusals, and of a cancel that must reach the backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobgate.api.app import create_app
from jobgate.backends import registry
from jobgate.config import Settings
from jobgate.domain.states import State
from tests.dispatcher import fakekind
from tests.dispatcher.fake import FakeBackend

TASK = {"executors": [{"image": "x", "command": ["echo", "hi"]}]}


@pytest.fixture()
async def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeBackend]]:
    points = [
        *entry_points(group=registry.GROUP),
        EntryPoint("fake", "tests.dispatcher.fakekind:KIND", registry.GROUP),
    ]
    found = registry.discover(points)
    monkeypatch.setattr(registry, "catalog", lambda: found)
    fake = fakekind.INSTANCES["hpc"] = FakeBackend("hpc")
    config = tmp_path / "backends.yaml"
    config.write_text("default_backend: hpc\nbackends:\n  hpc: {type: fake}\n")
    settings = Settings(
        data_dir=tmp_path / "data", config_file=config, auth=("none",), poll_interval=0.05
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c, fake
    fakekind.INSTANCES.clear()


async def job(c: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    r = await c.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def until(
    c: httpx.AsyncClient, job_id: str, state: str, within: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (seen := await job(c, job_id))["state"] != state:
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.02)
    return seen


async def held(fake: FakeBackend, job_id: str, within: float = 10) -> str:
    """The native id once the fake backend holds the job."""
    deadline = time.monotonic() + within
    while not any(e.job.id == job_id for e in fake.jobs.values()):
        assert time.monotonic() < deadline, f"{job_id} never reached the backend"
        await asyncio.sleep(0.02)
    return fake.native_of(job_id)


async def test_tes_sees_a_job_in_the_backends_queue_as_queued_with_the_reason(
    client: tuple[httpx.AsyncClient, FakeBackend],
) -> None:
    c, fake = client
    r = await c.post("/ga4gh/tes/v1/tasks", json=TASK)
    assert r.status_code == 200, r.text
    task_id = r.json()["id"]
    nid = await held(fake, task_id)
    fake.move(nid, State.QUEUED, "Fake: PENDING (Priority)")
    deadline = time.monotonic() + 10
    while (seen := await job(c, task_id))["detail"] != "Fake: PENDING (Priority)":
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.02)
    assert seen["state"] == "QUEUED"
    tes = (await c.get(f"/ga4gh/tes/v1/tasks/{task_id}", params={"view": "FULL"})).json()
    assert tes["state"] == "QUEUED"
    fake.move(nid, State.RUNNING)
    await until(c, task_id, "RUNNING")
    fake.move(nid, State.COMPLETE)
    await until(c, task_id, "COMPLETE")


async def test_a_transient_refusal_shows_as_queued_waiting_for_the_backend(
    client: tuple[httpx.AsyncClient, FakeBackend],
) -> None:
    c, fake = client
    fake.refuse(1, "controller is restarting")
    r = await c.post("/api/v1/jobs", json=TASK)
    assert r.status_code in (200, 201), r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 10
    while "waiting for backend hpc" not in ((seen := await job(c, job_id))["detail"] or ""):
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.02)
    assert seen["state"] == "QUEUED"
    assert "controller is restarting" in seen["detail"]
    # Taken again after the delay, then accepted.
    fake.move(await held(fake, job_id), State.COMPLETE)
    await until(c, job_id, "COMPLETE")
    assert fake.calls.submits == [job_id, job_id]


async def test_tes_cancel_of_a_job_in_the_backends_queue_reaches_the_backend(
    client: tuple[httpx.AsyncClient, FakeBackend],
) -> None:
    c, fake = client
    task_id = (await c.post("/ga4gh/tes/v1/tasks", json=TASK)).json()["id"]
    await until(c, task_id, "QUEUED")
    await held(fake, task_id)
    assert (await c.post(f"/ga4gh/tes/v1/tasks/{task_id}:cancel")).status_code == 200
    await until(c, task_id, "CANCELED")
    assert fake.calls.cancels == [fake.native_of(task_id)]
