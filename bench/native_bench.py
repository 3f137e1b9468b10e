"""jobgate native API benchmark: bulk submission, search and summaries at a million jobs.

    .venv/bin/python bench/native_bench.py            # full run (1,000,000 jobs seeded)
    .venv/bin/python bench/native_bench.py --quick    # smoke run (under a minute)

Phases (``--only`` picks some): ``submit`` (held jobs per second through
``/api/v1/jobs/bulk`` in batches and ``/api/v1/jobs/parametric``), ``query`` (a database
seeded with 1,000,000 jobs straight through ``JobStore.create``, then search and summary
latencies over HTTP). Each phase starts its own ``jobgate serve`` on a temporary data dir;
server and load generator share this machine, and the table says how busy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tes_bench import Noise, Report, Server, mib, ms, pct, progress, running

API = "/api/v1"
TES = "/ga4gh/tes/v1"
JSON_HEADERS = {"content-type": "application/json"}
ENV = {"JOBGATE_RUNTIME": "auto"}  # held jobs never run: any runtime will do


@dataclass(frozen=True)
class Sizes:
    bulk_jobs: int
    """Jobs submitted per (endpoint, batch size) configuration."""
    seed_jobs: int
    searches: int
    """Requests per search shape (p99 is the 99th percentile of these)."""
    deep_pages: int
    summaries: int


FULL_SIZES = Sizes(100_000, 1_000_000, 200, 300, 10)
QUICK_SIZES = Sizes(10_000, 50_000, 30, 30, 3)


def post_ok(r: httpx.Response) -> dict[str, Any]:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}")
    out: dict[str, Any] = r.json()
    return out


# -- submit ----------------------------------------------------------------------------------


@dataclass
class Submitted:
    jobs: int
    seconds: float
    latencies: list[float]
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0


def bulk_bodies(total: int, batch: int, tag: str) -> list[bytes]:
    bodies = []
    for start in range(0, total, batch):
        jobs = [
            {
                "name": f"{tag}-{i}",
                "script": f"echo {i} > out.txt",
                "hold": True,
                "priority": i % 10,
                "labels": {"bench": tag, "batch": str(start // batch)},
            }
            for i in range(start, min(total, start + batch))
        ]
        bodies.append(json.dumps({"jobs": jobs}).encode())
    return bodies


def parametric_bodies(total: int, batch: int, tag: str) -> list[bytes]:
    bodies = []
    for start in range(0, total, batch):
        body = {
            "job": {
                "name": f"{tag}-{{{{ i }}}}-{{{{ s }}}}",
                "script": "echo {{ i }} {{ s }} > out.txt",
                "hold": True,
                "labels": {"bench": tag},
            },
            "parameters": {
                "i": {"start": start, "stop": start + batch // 2},
                "s": ["a", "b"],
            },
        }
        bodies.append(json.dumps(body).encode())
    return bodies


async def submit_all(srv: Server, path: str, bodies: list[bytes], clients: int) -> Submitted:
    """POST every body (``clients`` at a time); count the jobs each answer reports."""
    lat: list[float] = []
    done = 0
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(base_url=srv.url + API, timeout=300) as c:
        await asyncio.gather(*(c.get("/jobs/warm-up") for _ in range(clients)))

        async def worker() -> None:
            nonlocal done
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                r = await c.post(path, content=body, headers=JSON_HEADERS)
                lat.append(time.perf_counter() - t0)
                answer = post_ok(r)
                if answer["failed"]:
                    raise RuntimeError(f"{answer['failed']} jobs refused: {answer['results'][:2]}")
                done += answer["succeeded"]

        cpu0, t0 = srv.own_cpu(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        cpu1 = srv.own_cpu()
    return Submitted(done, elapsed, lat, cpu1 - cpu0)


def phase_submit(rep: Report, root: Path, sz: Sizes, rss: dict[str, str], target: Target) -> None:
    db = target.kind
    sec = f"1 submit [{db}]"
    configs: list[tuple[str, str, int, int, Callable[[int, int, str], list[bytes]]]] = [
        ("bulk", "/jobs/bulk", 1000, 1, bulk_bodies),
        ("bulk", "/jobs/bulk", 5000, 1, bulk_bodies),
        ("bulk", "/jobs/bulk", 5000, 2, bulk_bodies),
        ("parametric", "/jobs/parametric", 10_000, 1, parametric_bodies),
    ]
    # PostgreSQL: one run (synchronous_commit as the server has it), labelled sync=NORMAL.
    for sync in ("NORMAL", "FULL") if db == "sqlite" else ("NORMAL",):
        phase = f"submit-{sync.lower()}"
        data = root / f"{phase}-{db}"
        asyncio.run(target.create(phase))
        env = {**ENV, "JOBGATE_SQLITE_SYNCHRONOUS": sync, **target.env(data, phase)}
        progress(f"[submit/{db}] held jobs, sync={sync}")
        with running(data, env) as srv:
            rss.setdefault(f"submit server [{db}], idle", mib(srv.rss()))
            for kind, path, batch, clients, make in configs:
                if sync == "FULL" and (batch, clients) != (5000, 1):
                    continue
                tag = f"{kind}{batch}x{clients}"
                bodies = make(sz.bulk_jobs, batch, tag)
                progress(f"  {kind}: {len(bodies)} requests of {batch:,} jobs, {clients} client(s)")
                res = asyncio.run(submit_all(srv, path, bodies, clients))
                label = f"{kind}, {batch:,}/request, {clients} client{'s' * (clients > 1)}"
                goal = 10_000 if sync == "NORMAL" else None
                rep.add(
                    sec,
                    f"{label}, sync={sync}: jobs/s",
                    f"{res.rate:,.0f}/s ({res.jobs:,} in {res.seconds:.1f} s)",
                    f">= {goal:,}/s" if goal else "",
                    None if goal is None else res.rate >= goal,
                )
                rep.add(
                    sec,
                    f"{label}, sync={sync}: request p50 / p99",
                    f"{ms(pct(res.latencies, 50))} / {ms(pct(res.latencies, 99))}",
                )
                rep.add(
                    sec,
                    f"{label}, sync={sync}: server CPU per 1,000 jobs",
                    ms(res.server_cpu / max(res.jobs, 1) * 1000),
                )
            if sync == "NORMAL":
                rss[f"submit server [{db}], after the submissions"] = mib(srv.rss())
            counts = dict(
                asyncio.run(
                    db_rows(
                        target.url(data, phase), "SELECT state, count(*) FROM jobs GROUP BY state"
                    )
                )
            )
            progress(f"  stored: {counts}")
        asyncio.run(target.drop(phase))
    rep.notes.append(
        "submit: held jobs (hold: true, PAUSED) so nothing runs; each answer means the jobs, "
        "their labels and creation events are committed (one transaction per request). "
        "sync=NORMAL (default, WAL) survives a crash of the process; sync=FULL also a power "
        "loss. Request bodies are encoded before the clock starts."
    )


async def db_rows(url: str, sql: str, *, fetch: bool = True) -> list[tuple[Any, ...]]:
    """Rows of one statement on the database at ``url`` (SQLite or PostgreSQL)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as con:
            if not fetch:
                await con.execution_options(isolation_level="AUTOCOMMIT")
                await con.exec_driver_sql(sql)
                return []
            return [tuple(r) for r in (await con.execute(text(sql))).all()]
    finally:
        await engine.dispose()


# -- seeding ---------------------------------------------------------------------------------

PROJECTS = [
    "rnaseq",
    "variants",
    "assembly",
    "chipseq",
    "proteomics",
    "imaging",
    "climate",
    "cryoem",
    "mdsim",
    "qc",
    "phylo",
    "mltrain",
]
STAGES = ["align", "call", "merge", "qc", "report"]
OWNERS = [f"user{n:03d}" for n in range(200)]
SAMPLES = 20_000


@dataclass
class Seeded:
    """What the query phase needs to know about the seeded data."""

    jobs: int = 0
    groups: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    first: datetime = field(default_factory=lambda: datetime.now(UTC))
    last: datetime = field(default_factory=lambda: datetime.now(UTC))
    ids: list[str] = field(default_factory=list)
    """Job ids spread over the whole table (GET one task)."""


def _zipf(rng: random.Random, items: list[str], s: float = 1.1) -> list[str]:
    weights = [1 / (k + 1) ** s for k in range(len(items))]
    return rng.choices(items, weights, k=4096)


async def seed(url: str, n: int) -> Seeded:
    """Insert ``n`` jobs as a month of real use would leave them, straight into the store.

    Submissions of 1-50 single jobs and parametric sweeps of 100-5,000 (a group, param.i
    labels); owners and projects Zipf-distributed; mostly final states, the newest jobs
    queued (on backends this server does not run, so nothing starts) or held.
    """
    from jobgate.domain.models import new_job_id
    from jobgate.domain.states import State
    from jobgate.store.access import Database
    from jobgate.store.database import make_engine, migrate
    from jobgate.store.jobs import JobStore, NewJob

    rng = random.Random(42)
    owners, projects = _zipf(rng, OWNERS), _zipf(rng, PROJECTS, 0.8)
    final = [State.COMPLETE] * 82 + [State.EXECUTOR_ERROR] * 10 + [State.SYSTEM_ERROR]
    final += [State.CANCELED] * 5 + [State.PAUSED] * 2
    engine = make_engine(url)
    out = Seeded(jobs=n)
    every = max(1, n // 256)
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / n
    out.first = start
    try:
        await migrate(engine)
        store = JobStore(Database(engine, sqlite_synchronous="OFF"))
        batch: list[NewJob] = []
        k = 0
        while k < n:
            owner, project = rng.choice(owners), rng.choice(projects)
            backend = rng.choices(["local", "slurm", "k8s"], [5, 4, 1])[0]
            sweep = rng.random() < 0.3
            size = min(n - k, rng.randint(100, 5000) if sweep else rng.randint(1, 50))
            group = new_job_id() if sweep else None
            if group is not None:
                out.groups.append(group)
            priority = rng.choices([0, rng.randint(1, 10), -rng.randint(1, 5)], [80, 15, 5])[0]
            stage = rng.choice(STAGES)
            for i in range(size):
                # The newest tenth of the jobs is still waiting; the rest is mostly done.
                if k > n * 0.9 and rng.random() < 0.6:
                    state = State.QUEUED if backend != "local" else State.PAUSED
                else:
                    state = rng.choice(final)
                sample = f"S{rng.randrange(SAMPLES):05d}"
                labels = {"project": project, "stage": stage, "sample": sample}
                if group is not None:
                    labels["param.i"] = str(i)
                name = f"{project}-{stage}-{sample}"
                script = f"run-{stage} --sample {sample} --out results/{sample}"
                spec = {
                    "name": name,
                    "executors": [{"image": "default", "command": ["/bin/sh", "-c", script]}],
                    "tags": labels,
                    "script": script,
                }
                job_id = new_job_id()
                if k % every == every // 2:
                    out.ids.append(job_id)
                batch.append(
                    NewJob(
                        id=job_id,
                        spec=spec,
                        backend=backend,
                        owner=owner,
                        priority=priority,
                        state=state,
                        created_at=start + step * k,
                        group_id=group,
                    )
                )
                k += 1
            if len(batch) >= 5000 or k >= n:
                await store.create(batch, source="bench")
                if k // 100_000 > (k - len(batch)) // 100_000:
                    progress(f"  {k:,} jobs")
                batch = []
        out.last = start + step * (n - 1)
        store.close()
    finally:
        await engine.dispose()
    out.samples = [f"S{i:05d}" for i in rng.sample(range(SAMPLES), 64)]
    return out


# -- query -----------------------------------------------------------------------------------


@dataclass
class Timed:
    latencies: list[float]
    server_cpu: float
    rows: int

    def p(self, q: float) -> float:
        return pct(self.latencies, q)


def timed(
    srv: Server, c: httpx.Client, path: str, bodies: Callable[[int], dict[str, Any]], n: int
) -> Timed:
    """``n`` sequential POSTs of ``bodies(i)`` (after a few warm-up requests)."""
    for i in range(min(5, n)):
        post_ok(c.post(path, json=bodies(-1 - i)))
    lat: list[float] = []
    rows = 0
    cpu0 = srv.own_cpu()
    for i in range(n):
        body = json.dumps(bodies(i)).encode()
        t0 = time.perf_counter()
        r = c.post(path, content=body, headers=JSON_HEADERS)
        lat.append(time.perf_counter() - t0)
        answer = post_ok(r)
        rows += len(answer.get("jobs", answer.get("groups", [])))
    return Timed(lat, srv.own_cpu() - cpu0, rows)


def deep_pages(srv: Server, c: httpx.Client, body: dict[str, Any], pages: int) -> Timed:
    """Follow ``next_cursor`` for ``pages`` pages; the latency of each page."""
    lat: list[float] = []
    rows = 0
    cursor = None
    cpu0 = srv.own_cpu()
    for _ in range(pages):
        payload = json.dumps({**body, **({"cursor": cursor} if cursor else {})}).encode()
        t0 = time.perf_counter()
        r = c.post("/jobs/search", content=payload, headers=JSON_HEADERS)
        lat.append(time.perf_counter() - t0)
        answer = post_ok(r)
        rows += len(answer["jobs"])
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    return Timed(lat, srv.own_cpu() - cpu0, rows)


def _f(field: str, value: Any, op: str = "eq") -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


def search_shapes(s: Seeded) -> list[tuple[str, Callable[[int], dict[str, Any]]]]:
    """Typical searches; each request varies its values so no single answer is cached."""
    day = (s.last - timedelta(days=1)).isoformat()
    week_ago = s.last - timedelta(days=7)

    def pick(items: list[str], i: int) -> str:
        return items[i % len(items)]

    return [
        (
            "state=EXECUTOR_ERROR, newest first",
            lambda i: {"filters": [_f("state", "EXECUTOR_ERROR")]},
        ),
        (
            "state in [QUEUED, PAUSED]",
            lambda i: {"filters": [_f("state", ["QUEUED", "PAUSED"], "in")]},
        ),
        (
            "owner=X and state=COMPLETE",
            lambda i: {"filters": [_f("owner", pick(OWNERS, i)), _f("state", "COMPLETE")]},
        ),
        ("labels.project=X", lambda i: {"filters": [_f("labels.project", pick(PROJECTS, i))]}),
        (
            "labels.sample=X (rare)",
            lambda i: {"filters": [_f("labels.sample", pick(s.samples, i))]},
        ),
        (
            "labels.project=X and state=EXECUTOR_ERROR",
            lambda i: {
                "filters": [_f("labels.project", pick(PROJECTS, i)), _f("state", "EXECUTOR_ERROR")]
            },
        ),
        (
            "name like 'project-stage-*'",
            lambda i: {"filters": [_f("name", f"{pick(PROJECTS, i)}-{pick(STAGES, i)}-*", "like")]},
        ),
        (
            "name like '*-S0123?' (substring)",
            lambda i: {"filters": [_f("name", f"*-{pick(s.samples, i)[:5]}?", "like")]},
        ),
        ("group=X", lambda i: {"filters": [_f("group", pick(s.groups, i))]}),
        (
            "group=X and state=EXECUTOR_ERROR",
            lambda i: {"filters": [_f("group", pick(s.groups, i)), _f("state", "EXECUTOR_ERROR")]},
        ),
        ("all, sorted by priority desc", lambda i: {"sort": [{"field": "priority"}]}),
        (
            "state=QUEUED, sorted by priority desc",
            lambda i: {"filters": [_f("state", "QUEUED")], "sort": [{"field": "priority"}]},
        ),
        (
            "owner=X, sorted by name asc",
            lambda i: {
                "filters": [_f("owner", pick(OWNERS, i))],
                "sort": [{"field": "name", "direction": "asc"}],
            },
        ),
        ("created_at > a day ago", lambda i: {"filters": [_f("created_at", day, "gt")]}),
        (
            "created_at in a one-hour window a week ago",
            lambda i: {
                "filters": [
                    _f("created_at", (week_ago + timedelta(minutes=i % 60)).isoformat(), "gt"),
                    _f("created_at", (week_ago + timedelta(minutes=60 + i % 60)).isoformat(), "lt"),
                ]
            },
        ),
    ]


DEEP = [
    ("newest first", {}),
    ("sorted by priority desc", {"sort": [{"field": "priority"}]}),
    ("labels.project=cryoem", {"filters": [_f("labels.project", "cryoem")]}),
    ("state=EXECUTOR_ERROR", {"filters": [_f("state", "EXECUTOR_ERROR")]}),
    ("sorted by name asc", {"sort": [{"field": "name", "direction": "asc"}]}),
    (
        "owner=user000, sorted by priority desc",
        {"filters": [_f("owner", "user000")], "sort": [{"field": "priority"}]},
    ),
]

SUMMARIES: list[tuple[str, dict[str, Any]]] = [
    ("by state", {"group_by": ["state"]}),
    ("by state + owner", {"group_by": ["state", "owner"]}),
    ("by labels.project", {"group_by": ["labels.project"]}),
    ("by backend + state", {"group_by": ["backend", "state"]}),
    ("by state, one owner", {"group_by": ["state"], "filters": [_f("owner", "user003")]}),
    ("by state, one group", {"group_by": ["state"], "filters": [_f("group", "<group>")]}),
]


async def reseeded(url: str) -> Seeded:
    """The facts :func:`seed` returns, read back from a database it filled (``--reuse``)."""
    rng = random.Random(42)
    ((n, lo, hi, first, last),) = await db_rows(
        url, "SELECT count(*), min(seq), max(seq), min(created_at), max(created_at) FROM jobs"
    )
    groups = await db_rows(url, "SELECT DISTINCT group_id FROM jobs WHERE group_id IS NOT NULL")
    seqs = ", ".join(str(lo + (hi - lo) * k // 256) for k in range(256))
    ids = await db_rows(url, f"SELECT id FROM jobs WHERE seq IN ({seqs})")

    def utc(v: Any) -> datetime:
        v = v if isinstance(v, datetime) else datetime.fromisoformat(v)
        return v if v.tzinfo else v.replace(tzinfo=UTC)

    return Seeded(
        jobs=n,
        groups=sorted(g for (g,) in groups),
        samples=[f"S{i:05d}" for i in rng.sample(range(SAMPLES), 64)],
        first=utc(first),
        last=utc(last),
        ids=[i for (i,) in ids],
    )


@contextlib.contextmanager
def running_long(data_dir: Path, env: dict[str, str], timeout: float) -> Iterator[Server]:
    srv = Server(data_dir, env).start(timeout=timeout)
    try:
        yield srv
    finally:
        srv.stop()


def timed_get(
    srv: Server, c: httpx.Client, request: Callable[[int], tuple[str, dict[str, Any]]], n: int
) -> Timed:
    """``n`` sequential GETs of ``request(i)`` = (path, query parameters), after a warm-up."""
    for i in range(min(5, n)):
        post_ok(c.get(request(-1 - i)[0], params=request(-1 - i)[1]))
    lat: list[float] = []
    rows = 0
    cpu0 = srv.own_cpu()
    for i in range(n):
        path, params = request(i)
        t0 = time.perf_counter()
        r = c.get(path, params=params)
        lat.append(time.perf_counter() - t0)
        answer = post_ok(r)
        rows += len(answer["tasks"]) if "tasks" in answer else 1
    return Timed(lat, srv.own_cpu() - cpu0, rows)


def tes_shapes(s: Seeded) -> list[tuple[str, Callable[[int], tuple[str, dict[str, Any]]]]]:
    """TES reads: one task, and ListTasks pages (100 tasks) with each filter TES has."""

    def pick(items: list[str], i: int) -> str:
        return items[i % len(items)]

    page = {"page_size": 100}
    return [
        ("GET one task (MINIMAL)", lambda i: (f"/tasks/{pick(s.ids, i)}", {})),
        ("GET one task (FULL)", lambda i: (f"/tasks/{pick(s.ids, i)}", {"view": "FULL"})),
        ("list, newest first", lambda i: ("/tasks", page)),
        ("list, view=BASIC", lambda i: ("/tasks", {**page, "view": "BASIC"})),
        ("list, state=EXECUTOR_ERROR", lambda i: ("/tasks", {**page, "state": "EXECUTOR_ERROR"})),
        (
            "list, tag project=X",
            lambda i: ("/tasks", {**page, "tag_key": "project", "tag_value": pick(PROJECTS, i)}),
        ),
        (
            "list, tag sample=X (rare)",
            lambda i: ("/tasks", {**page, "tag_key": "sample", "tag_value": pick(s.samples, i)}),
        ),
        (
            "list, tag project=X and stage=Y",
            lambda i: (
                "/tasks",
                {
                    **page,
                    "tag_key": ["project", "stage"],
                    "tag_value": [pick(PROJECTS, i), pick(STAGES, i // len(PROJECTS))],
                },
            ),
        ),
        ("list, tag_key param.i (any value)", lambda i: ("/tasks", {**page, "tag_key": "param.i"})),
        (
            "list, name_prefix project-stage-",
            lambda i: (
                "/tasks",
                {**page, "name_prefix": f"{pick(PROJECTS, i)}-{pick(STAGES, i // len(PROJECTS))}-"},
            ),
        ),
        (
            "list, name_prefix project-stage-S0123 (rare)",
            lambda i: (
                "/tasks",
                {
                    **page,
                    "name_prefix": f"{pick(PROJECTS, i)}-{pick(STAGES, i)}-"
                    + pick(s.samples, i)[:5],
                },
            ),
        ),
    ]


def tes_deep(srv: Server, c: httpx.Client, params: dict[str, Any], pages: int) -> Timed:
    """Follow ``next_page_token`` for ``pages`` TES pages; the latency of each page."""
    lat: list[float] = []
    rows = 0
    token = None
    cpu0 = srv.own_cpu()
    for _ in range(pages):
        t0 = time.perf_counter()
        r = c.get("/tasks", params={**params, **({"page_token": token} if token else {})})
        lat.append(time.perf_counter() - t0)
        answer = post_ok(r)
        rows += len(answer["tasks"])
        token = answer.get("next_page_token")
        if not token:
            break
    return Timed(lat, srv.own_cpu() - cpu0, rows)


def phase_query(
    rep: Report,
    root: Path,
    sz: Sizes,
    rss: dict[str, str],
    target: Target,
    reuse: Path | None = None,
    seed_only: bool = False,
) -> None:
    tag = target.kind
    data = root / ("query" if target.kind == "sqlite" else f"query-{target.kind}")
    if target.kind == "sqlite" and reuse is not None:
        data = reuse
    url = target.url(data, "query")
    reusing = reuse is not None if target.kind == "sqlite" else target.reuse
    if reusing:
        progress(f"[query/{tag}] reusing {url}")
        seeded = asyncio.run(reseeded(url))
    else:
        data.mkdir(parents=True, exist_ok=True)
        asyncio.run(target.create("query"))
        progress(f"[query/{tag}] seeding {sz.seed_jobs:,} jobs into a fresh database")
        t0 = time.perf_counter()
        seeded = asyncio.run(seed(url, sz.seed_jobs))
        took = time.perf_counter() - t0
        rep.add(
            f"2 seed [{tag}]",
            f"seeded {sz.seed_jobs:,} jobs (JobStore.create, 5,000/batch)",
            f"{took:.0f} s ({sz.seed_jobs / took:,.0f} jobs/s), database "
            f"{mib(asyncio.run(target.size(data, 'query')))}",
        )
    if seed_only:
        return
    if target.kind == "postgresql":
        # As autovacuum would by now: planner statistics and the visibility map (index-only
        # scans) of the freshly filled tables.
        asyncio.run(db_rows(url, "VACUUM ANALYZE", fetch=False))
    n = seeded.jobs
    stored = f"{n / 1e6:g}M" if n >= 1e6 else f"{n // 1000}k"
    t0 = time.perf_counter()
    with running_long(data, {**ENV, **target.env(data, "query")}, timeout=1800) as srv:
        rep.add(
            f"2 seed [{tag}]",
            "server start (migrations) on the seeded database",
            f"{time.perf_counter() - t0:.1f} s",
        )
        rss[f"query server [{tag}], idle, {stored} jobs"] = mib(srv.rss())
        with httpx.Client(base_url=srv.url + API, timeout=300) as c:
            sec = f"3 search [{tag}]"
            progress(f"[search] {len(search_shapes(seeded))} shapes x {sz.searches} requests")
            for label, make in search_shapes(seeded):
                res = timed(srv, c, "/jobs/search", make, sz.searches)
                p99 = res.p(99)
                rep.add(
                    sec,
                    f"{label}: p50 / p99 ({stored} jobs, 100/page)",
                    f"{ms(res.p(50))} / {ms(p99)}  ({res.rows / sz.searches:.0f} rows)",
                    "p99 < 50 ms",
                    p99 < 0.050,
                )
            for label, body in DEEP:
                res = deep_pages(srv, c, {**body, "limit": 100}, sz.deep_pages)
                p99 = res.p(99)
                rep.add(
                    sec,
                    f"deep paging, {label}: {len(res.latencies)} pages, p50 / p99",
                    f"{ms(res.p(50))} / {ms(p99)} (last {ms(res.latencies[-1])})",
                    "p99 < 50 ms",
                    p99 < 0.050,
                )
        with httpx.Client(base_url=srv.url + TES, timeout=300) as c:
            sec = f"3 tes [{tag}]"
            progress(f"[tes] {len(tes_shapes(seeded))} shapes x {sz.searches} requests")
            for label, request in tes_shapes(seeded):
                res = timed_get(srv, c, request, sz.searches)
                p99, goal = res.p(99), 0.010 if label.startswith("GET") else 0.050
                rep.add(
                    sec,
                    f"{label}: p50 / p99 ({stored} jobs)",
                    f"{ms(res.p(50))} / {ms(p99)}  ({res.rows / sz.searches:.0f} rows)",
                    f"p99 < {goal * 1000:.0f} ms",
                    p99 < goal,
                )
            for label, params in (
                ("newest first", {}),
                ("tag project=cryoem", {"tag_key": "project", "tag_value": "cryoem"}),
            ):
                res = tes_deep(srv, c, {**params, "page_size": 100}, sz.deep_pages)
                p99 = res.p(99)
                rep.add(
                    sec,
                    f"list deep paging, {label}: {len(res.latencies)} pages, p50 / p99",
                    f"{ms(res.p(50))} / {ms(p99)} (last {ms(res.latencies[-1])})",
                    "p99 < 50 ms",
                    p99 < 0.050,
                )
        with httpx.Client(base_url=srv.url + API, timeout=300) as c:
            sec = f"4 summary [{tag}]"
            progress(f"[summary] {len(SUMMARIES)} shapes x {sz.summaries} requests")
            for label, body in SUMMARIES:
                text = json.dumps(body).replace("<group>", seeded.groups[0])

                def same(_i: int, text: str = text) -> dict[str, Any]:
                    out: dict[str, Any] = json.loads(text)
                    return out

                res = timed(srv, c, "/jobs/summary", same, sz.summaries)
                p99 = max(res.latencies)
                rep.add(
                    sec,
                    f"{label}: p50 / max ({stored} jobs, {res.rows // sz.summaries} groups)",
                    f"{ms(res.p(50))} / {ms(p99)}",
                    "max < 1 s",
                    p99 < 1.0,
                )
        rss[f"query server [{tag}], after queries, {stored} jobs"] = mib(srv.rss())
    note = (
        "search/summary/tes: one client, sequential requests, keep-alive; latency is the "
        "client's round trip (default fields, 100 jobs per page). The seeded jobs carry 3-4 "
        "labels each (project, stage, sample[, param.i]), 200 owners, 12 projects, "
        "20,000 samples; a third come from parametric sweeps (groups)."
    )
    if note not in rep.notes:
        rep.notes.append(note)


# -- databases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a phase's server keeps its jobs: SQLite under its data dir, or PostgreSQL.

    On PostgreSQL each phase gets a database of its own, ``<base name>_<phase>``, created
    fresh (dropped first) and dropped at the end unless ``--keep``.
    """

    kind: str
    pg_url: str = ""
    reuse: bool = False
    """PostgreSQL: the query database was seeded by an earlier ``--keep`` run."""

    def _pg(self, phase: str) -> Any:
        from sqlalchemy.engine import make_url

        base = make_url(self.pg_url)
        return base.set(database=f"{base.database}_{phase.replace('-', '_')}")

    def url(self, data_dir: Path, phase: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{data_dir / 'jobgate.db'}"
        out: str = self._pg(phase).render_as_string(hide_password=False)
        return out

    def env(self, data_dir: Path, phase: str) -> dict[str, str]:
        return {} if self.kind == "sqlite" else {"JOBGATE_DATABASE_URL": self.url(data_dir, phase)}

    async def _admin(self, sql: str) -> None:
        import asyncpg

        u = self._pg("x")
        con = await asyncpg.connect(
            host=u.host,
            port=u.port or 5432,
            user=u.username,
            password=u.password,
            database="postgres",
        )
        try:
            await con.execute(sql)
        finally:
            await con.close()

    async def create(self, phase: str) -> None:
        if self.kind == "postgresql":
            name = self._pg(phase).database
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await self._admin(f'CREATE DATABASE "{name}"')

    async def drop(self, phase: str) -> None:
        if self.kind == "postgresql":
            await self._admin(f'DROP DATABASE IF EXISTS "{self._pg(phase).database}" WITH (FORCE)')

    async def size(self, data_dir: Path, phase: str) -> int:
        if self.kind == "sqlite":
            return (data_dir / "jobgate.db").stat().st_size
        ((n,),) = await db_rows(
            self.url(data_dir, phase), "SELECT pg_database_size(current_database())"
        )
        return int(n)


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--only", default="submit,query", help="comma-separated: submit, query")
    ap.add_argument("--seed-jobs", type=int, help="jobs to seed for the query phase")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    ap.add_argument("--src", type=Path, help="run the servers from this src/ dir")
    ap.add_argument(
        "--reuse",
        type=Path,
        help="query phase on SQLite: use this data dir (a 'query' dir kept by --keep)",
    )
    ap.add_argument("--db", default="sqlite", help="comma-separated databases: sqlite, postgresql")
    ap.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/jobgate_bench",
        help="PostgreSQL server and base database name (phases use <name>_<phase>)",
    )
    ap.add_argument(
        "--reuse-pg",
        action="store_true",
        help="query phase on PostgreSQL: the <name>_query database kept by --keep",
    )
    ap.add_argument(
        "--seed-only", action="store_true", help="query phase: seed (with --keep), measure nothing"
    )
    args = ap.parse_args(argv)
    if args.src is not None:
        Server.src = args.src.resolve()
        sys.path.insert(0, str(Server.src))
    sz = QUICK_SIZES if args.quick else FULL_SIZES
    if args.seed_jobs:
        sz = Sizes(sz.bulk_jobs, args.seed_jobs, sz.searches, sz.deep_pages, sz.summaries)
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    if phases - {"submit", "query"}:
        ap.error(f"unknown phases: {sorted(phases - {'submit', 'query'})}")
    kinds = [d.strip() for d in args.db.split(",") if d.strip()]
    if set(kinds) - {"sqlite", "postgresql"}:
        ap.error(f"unknown databases: {sorted(set(kinds) - {'sqlite', 'postgresql'})}")
    targets = [Target(k, args.pg_url, args.reuse_pg) for k in kinds]

    root = Path(tempfile.mkdtemp(prefix="jobgate-native-bench-"))
    rep = Report()
    rss: dict[str, str] = {}
    started = time.perf_counter()
    progress(f"jobgate native bench ({'quick' if args.quick else 'full'}) in {root}")
    try:
        for target in targets:
            todo: list[tuple[str, Callable[[], None]]] = [
                ("submit", lambda t=target: phase_submit(rep, root, sz, rss, t)),
                (
                    "query",
                    lambda t=target: phase_query(rep, root, sz, rss, t, args.reuse, args.seed_only),
                ),
            ]
            for name, run in todo:
                if name in phases:
                    noise = Noise()
                    run()
                    rep.add(
                        "0 machine",
                        f"other processes' CPU during '{name}' [{target.kind}]",
                        noise.others(),
                    )
        for what, value in rss.items():
            rep.add("5 memory", f"server RSS, {what}", value, "< 200 MiB")
    finally:
        if args.keep:
            progress(
                f"data kept in {root}" + (f" and {args.pg_url}_*" if "postgresql" in kinds else "")
            )
        else:
            shutil.rmtree(root, ignore_errors=True)
            if "query" in phases and not args.seed_only:
                for target in targets:
                    if target.kind == "postgresql" and not target.reuse:
                        asyncio.run(target.drop("query"))
    print(
        f"\njobgate native API benchmark ({'quick' if args.quick else 'full'}), "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite "
        f"{sqlite3.sqlite_version}; took {time.perf_counter() - started:.0f} s"
    )
    rep.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
