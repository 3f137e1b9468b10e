"""How many heartbeats per second jobgate takes: the service's in-memory intake with its
batched writes to a real SQLite database, and the whole HTTP route of a running gateway.

    .venv/bin/python bench/heartbeat_bench.py [--jobs 2000] [--seconds 5] [--http-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tes_bench import running

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jobgate.domain.models import new_job_id
from jobgate.domain.states import State
from jobgate.service.heartbeats import Heartbeats
from jobgate.store.database import make_engine, migrate
from jobgate.store.jobs import JobStore, NewJob


async def in_process(root: Path, jobs: int, seconds: float) -> float:
    engine = make_engine(f"sqlite+aiosqlite:///{root / 'bench.sqlite'}")
    await migrate(engine)
    store = JobStore(engine)
    ids = [new_job_id() for _ in range(jobs)]
    spec = {"executors": [{"image": "alpine", "command": ["true"]}]}
    await store.create([NewJob(id=i, spec=spec, backend="local", state=State.RUNNING) for i in ids])
    beats = Heartbeats(store, flush_interval=1.0)
    await beats.start()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for job_id in ids:
            beats.heartbeat("bench", job_id, {"load": 1.0, "cpu_seconds": n, "stdout": "x" * 80})
        n += len(ids)
        await asyncio.sleep(0)  # let the flusher run between rounds, as requests would
    await beats.stop()  # the last batch is written too
    elapsed = time.perf_counter() - start
    store.close()
    await engine.dispose()
    return n / elapsed


async def over_http(url: str, job_ids: list[str], seconds: float, parallel: int = 16) -> float:
    count = 0
    stop = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, k: int) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            job_id = job_ids[(count + k) % len(job_ids)]
            r = await client.patch(f"/api/v1/jobs/{job_id}/heartbeat", json={"load": 1.0})
            assert r.status_code == 204, r.text
            count += 1

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, k) for k in range(parallel)))
        return count / (time.perf_counter() - start)


async def bulk_over_http(url: str, job_ids: list[int], seconds: float, parallel: int = 4) -> float:
    """A pilot's way: DiracX's route takes the heartbeats of many jobs in one request."""
    count = 0
    stop = time.perf_counter() + seconds
    body = {str(j): {"LoadAverage": 1.0, "CPUConsumed": 2.0} for j in job_ids}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            r = await client.patch("/api/jobs/heartbeat", json=body)
            assert r.status_code == 200, r.text
            count += len(job_ids)

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
        return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--http-seconds", type=float, default=5.0)
    ap.add_argument("--bulk", type=int, default=100, help="jobs per DiracX heartbeat request")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jobgate-heartbeat-bench-"))
    rate = asyncio.run(in_process(root, args.jobs, args.seconds))
    print(f"service intake + batched SQLite writes, {args.jobs} jobs: {rate:,.0f} heartbeats/s")
    if args.http_seconds > 0:
        with running(root / "data") as srv, httpx.Client(base_url=srv.url) as c:
            ids = []
            for _ in range(4):
                r = c.post("/api/v1/jobs", json={"script": "sleep 120", "heartbeat_timeout": 60})
                ids.append(r.json()["id"])
            rate = asyncio.run(over_http(srv.url, ids, args.http_seconds))
            print(f"HTTP PATCH /api/v1/jobs/{{id}}/heartbeat, 16 in flight: {rate:,.0f}/s")
            group = f"bench-{new_job_id()}"
            job = {"script": "sleep 120", "heartbeat_timeout": 60, "labels": {"JobGroup": group}}
            r = c.post("/api/v1/jobs/bulk", json={"jobs": [job] * args.bulk})
            r.raise_for_status()
            ids += [item["id"] for item in r.json()["results"]]
            found = c.post(
                "/api/jobs/search",
                params={"per_page": args.bulk},
                json={"search": [{"parameter": "JobGroup", "operator": "eq", "value": group}]},
            ).json()
            numbers = [j["JobID"] for j in found]
            rate = asyncio.run(bulk_over_http(srv.url, numbers, args.http_seconds))
            print(
                f"HTTP PATCH /api/jobs/heartbeat (DiracX), {len(numbers)} jobs a request, "
                f"4 in flight: {rate:,.0f} heartbeats/s"
            )
            for job_id in ids:
                c.post(f"/api/v1/jobs/{job_id}/cancel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
