"""jobgate TES benchmark: starts its own servers on temporary data dirs and prints figures.

    .venv/bin/python bench/tes_bench.py            # full run (a few minutes)
    .venv/bin/python bench/tes_bench.py --quick    # smoke run (under a minute)

Phases (``--only`` picks some): ``create`` (POST /tasks per second), ``e2e`` (trivial
tasks through the bubblewrap runtime per second), ``latency`` (submit → RUNNING on an
idle server, from the ``job_events`` table), ``read`` (GET and list latency with 100,000
stored tasks). Server and load generator share this machine; every figure says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

TES = "/ga4gh/tes/v1"
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")
SMALL_TASK = {
    "name": "bench-true",
    "executors": [{"image": "alpine", "command": ["true"]}],
    "tags": {"bench": "1"},
}
SMALL_BODY = json.dumps(SMALL_TASK).encode()
JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class Sizes:
    creates_1: int
    creates_8: int
    create_seconds: float
    e2e_tasks: int
    latency_tasks: int
    seed_tasks: int
    gets: int
    lists: int


FULL_SIZES = Sizes(3000, 8000, 8.0, 500, 60, 100_000, 2000, 300)
QUICK_SIZES = Sizes(300, 800, 3.0, 60, 10, 10_000, 200, 40)


# -- output ---------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    metric: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        section: str,
        metric: str,
        value: str,
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        verdict = "" if ok is None else ("ok" if ok else "MISS")
        self.rows.append(Row(section, metric, value, target, verdict))
        progress(f"  {metric}: {value}" + (f"  (target {target}: {verdict})" if target else ""))

    def print(self) -> None:
        heads = ("phase", "metric", "value", "target", "")
        rows = sorted(self.rows, key=lambda r: r.section)  # stable: phase order kept
        cols = [[r.section, r.metric, r.value, r.target, r.verdict] for r in rows]
        widths = [max(len(h), *(len(c[i]) for c in cols)) for i, h in enumerate(heads)]
        line = "  ".join("-" * w for w in widths)
        print()
        print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
        print(line)
        last = None
        for c in cols:
            if last is not None and c[0] != last:
                print()
            shown = [("" if c[0] == last else c[0]), *c[1:]]
            print("  ".join(v.ljust(w) for v, w in zip(shown, widths, strict=True)).rstrip())
            last = c[0]
        print(line)
        for n in self.notes:
            print(f"* {n}")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class Noise:
    """How much CPU other processes used meanwhile: this machine may be shared.

    Ours is this process and every child it waited for (the servers, and through them their
    bwrap children); the rest of the machine's busy time belongs to someone else.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = self._busy()
        self.own0 = self._own()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq")))

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        other = max(0.0, (self._busy() - self.busy0) - (self._own() - self.own0))
        return (
            f"{other / elapsed:.2f} of {os.cpu_count()} cores (load avg {os.getloadavg()[0]:.1f})"
        )


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m jobgate serve`` on a data dir, as a user would run it."""

    src: Path | None = None
    """Another checkout's ``src`` to run instead of the installed jobgate (``--src``)."""
    launcher: tuple[str, ...] = ("-m", "jobgate")
    """How to start it after ``python`` (a profiling wrapper may replace it)."""
    serve_args: tuple[str, ...] = ()
    """More ``serve`` options (e.g. ``--no-dispatch``)."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("JOBGATE_")}
        if self.src is not None:
            base["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.src), base.get("PYTHONPATH", "")) if p
            )
        # Without authentication unless asked (auth_bench.py measures its cost).
        self.env = {**base, "JOBGATE_RUNTIME": "bwrap", "JOBGATE_AUTH": "none", **(env or {})}
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    @property
    def db(self) -> Path:
        return self.data_dir / "jobgate.db"

    def start(self, timeout: float = 30) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, *self.launcher, "serve", *self.serve_args),
                    *("--port", str(self.port)),
                    *("--data-dir", str(self.data_dir), "--log-level", "warning"),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    progress(f"  server pid {self.proc.pid} on {self.url} ({self.data_dir})")
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def cpu(self) -> float:
        """CPU seconds of the server process (all threads) and its reaped children."""
        assert self.ps is not None
        t = self.ps.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def own_cpu(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()
        return t.user + t.system


@contextlib.contextmanager
def running(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    srv = Server(data_dir, env).start()
    try:
        yield srv
    finally:
        srv.stop()


def db_query(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the server's SQLite database (WAL: readers never block the server's writer)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def parse_at(value: str | datetime) -> float:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return dt.timestamp() if dt.tzinfo else dt.replace(tzinfo=None).timestamp()


def events_by_job(path: Path, ids: list[str]) -> dict[str, dict[str, float]]:
    """job id → {to_state (or 'CREATED'): time of the first event into it}."""
    out: dict[str, dict[str, float]] = {i: {} for i in ids}
    rows = db_query(path, "SELECT job_id, at, from_state, to_state FROM job_events ORDER BY seq")
    for job_id, at, frm, to in rows:
        if job_id not in out:
            continue
        key = "CREATED" if frm is None else to
        out[job_id].setdefault(key, parse_at(at))
    return out


def state_counts(path: Path) -> dict[str, int]:
    return dict(db_query(path, "SELECT state, count(*) FROM jobs GROUP BY state"))  # type: ignore[arg-type]


# -- load ------------------------------------------------------------------------------------


def client(url: str, conns: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url + TES,
        timeout=30,
        limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
    )


@dataclass
class Load:
    done: int
    seconds: float
    latencies: list[float]
    ids: list[str]
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


async def post_many(
    srv: Server, clients: int, count: int, seconds: float, body: bytes = SMALL_BODY
) -> Load:
    """``count`` creates from ``clients`` concurrent keep-alive connections (or until
    ``seconds`` have passed)."""
    lat: list[float] = []
    ids: list[str] = []
    left = count
    async with client(srv.url, clients) as c:
        # Open the connections first: the measurement is of requests, not TCP handshakes.
        await asyncio.gather(*(c.get("/service-info") for _ in range(clients)))
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal left
            while left > 0 and time.perf_counter() < stop_at:
                left -= 1
                t0 = time.perf_counter()
                r = await c.post("/tasks", content=body, headers=JSON_HEADERS)
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()
                ids.append(r.json()["id"])

        cpu0, ccpu0, t0 = srv.own_cpu(), time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        cpu1, ccpu1 = srv.own_cpu(), time.process_time()
    return Load(len(ids), elapsed, lat, ids, cpu1 - cpu0, ccpu1 - ccpu0)


async def get_many(srv: Server, path: str, params: dict[str, str], n: int, seconds: float) -> Load:
    """``n`` sequential GETs of ``path`` (one client, keep-alive)."""
    lat: list[float] = []
    async with client(srv.url, 1) as c:
        for _ in range(min(20, n)):  # warm-up: connection, caches, first-call costs
            (await c.get(path, params=params)).raise_for_status()
        cpu0, ccpu0, t0 = srv.own_cpu(), time.process_time(), time.perf_counter()
        stop_at = t0 + seconds
        while len(lat) < n and time.perf_counter() < stop_at:
            s = time.perf_counter()
            r = await c.get(path, params=params)
            lat.append(time.perf_counter() - s)
            r.raise_for_status()
        elapsed = time.perf_counter() - t0
        cpu1, ccpu1 = srv.own_cpu(), time.process_time()
    return Load(len(lat), elapsed, lat, [], cpu1 - cpu0, ccpu1 - ccpu0)


async def get_tasks(srv: Server, ids: list[str], view: str, n: int, seconds: float) -> Load:
    """GET single tasks (random ids from ``ids``), sequentially."""
    lat: list[float] = []
    rnd = random.Random(7)
    async with client(srv.url, 1) as c:
        for i in rnd.sample(ids, min(20, len(ids))):
            (await c.get(f"/tasks/{i}", params={"view": view})).raise_for_status()
        cpu0, ccpu0, t0 = srv.own_cpu(), time.process_time(), time.perf_counter()
        stop_at = t0 + seconds
        while len(lat) < n and time.perf_counter() < stop_at:
            task_id = rnd.choice(ids)
            s = time.perf_counter()
            r = await c.get(f"/tasks/{task_id}", params={"view": view})
            lat.append(time.perf_counter() - s)
            r.raise_for_status()
        elapsed = time.perf_counter() - t0
        cpu1, ccpu1 = srv.own_cpu(), time.process_time()
    return Load(len(lat), elapsed, lat, [], cpu1 - cpu0, ccpu1 - ccpu0)


def wait_state(srv: Server, task_id: str, states: set[str], limit: float) -> str:
    with httpx.Client(base_url=srv.url + TES, timeout=30) as c:
        deadline = time.monotonic() + limit
        state = "?"
        while time.monotonic() < deadline:
            state = c.get(f"/tasks/{task_id}").json()["state"]
            if state in states:
                return str(state)
            time.sleep(0.05)
    raise RuntimeError(f"task {task_id} still {state} after {limit}s")


def wait_all_final(srv: Server, total: int, timeout: float) -> tuple[float, dict[str, int]]:
    """Poll the database until ``total`` jobs are final; (time it happened, counts)."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = state_counts(srv.db)
        if sum(counts.get(s, 0) for s in FINAL) >= total:
            return time.perf_counter(), counts
        time.sleep(0.05)
    raise RuntimeError(f"not all {total} tasks final after {timeout:.0f}s: {counts}")


# -- phases ----------------------------------------------------------------------------------


def load_figures(
    rep: Report, section: str, label: str, load: Load, target: float | None, held: bool
) -> None:
    rep.add(
        section,
        f"{label}: creates/s",
        f"{load.rate:,.0f}/s ({load.done} in {load.seconds:.1f} s)",
        f">= {target:,.0f}/s" if target else "",
        None if target is None else load.rate >= target,
    )
    rep.add(
        section,
        f"{label}: POST latency p50 / p99",
        f"{ms(pct(load.latencies, 50))} / {ms(pct(load.latencies, 99))}",
    )
    per = load.server_cpu / max(load.done, 1)
    rep.add(
        section,
        f"{label}: CPU per create, server / client",
        f"{ms(per)} / {ms(load.client_cpu / max(load.done, 1))}",
    )
    if held and per > 0:
        rep.add(
            section, f"{label}: server capacity, one core (1 / server CPU)", f"{1 / per:,.0f}/s"
        )


def phase_create(rep: Report, root: Path, sz: Sizes, rss: dict[str, str]) -> None:
    sec = "1 create"
    progress("[create] held queue: JOBGATE_SLOTS=1 and one `sleep` task holding the slot")
    for sync in ("NORMAL", "FULL"):
        env = {"JOBGATE_SLOTS": "1", "JOBGATE_SQLITE_SYNCHRONOUS": sync}
        with running(root / f"create-held-{sync.lower()}", env) as srv:
            rss.setdefault("create server, idle", mib(srv.rss()))
            blocker = httpx.post(
                srv.url + TES + "/tasks",
                json={"executors": [{"image": "alpine", "command": ["sleep", "600"]}]},
            ).json()["id"]
            wait_state(srv, blocker, {"RUNNING"}, 30)
            for clients, count in ((1, sz.creates_1), (8, sz.creates_8)):
                if sync == "FULL" and clients == 1:
                    continue
                load = asyncio.run(post_many(srv, clients, count, sz.create_seconds))
                label = f"{clients} client{'s' if clients > 1 else ''}, held, sync={sync}"
                load_figures(rep, sec, label, load, 1000 if sync == "NORMAL" else None, True)
            queued = state_counts(srv.db).get("QUEUED", 0)
            if sync == "NORMAL":
                rss["create server, after creates (held)"] = mib(srv.rss())
            progress(f"  {queued} tasks queued behind the blocker (none ran)")
    progress("[create] live queue: default slots, the dispatcher runs each `true` meanwhile")
    with running(root / "create-live") as srv:
        for clients, count in ((1, sz.creates_1 // 3), (8, sz.creates_8 // 4)):
            load = asyncio.run(post_many(srv, clients, count, sz.create_seconds))
            label = f"{clients} client{'s' if clients > 1 else ''}, live dispatcher"
            load_figures(rep, sec, label, load, None, False)
        counts = state_counts(srv.db)
        rep.add(sec, "live: tasks run meanwhile", f"{counts.get('COMPLETE', 0)} complete")
    rep.notes.append(
        "create 'held': JOBGATE_SLOTS=1 and one running `sleep 600` task occupy the only slot, "
        "so created tasks stay QUEUED: the figure is API + validation + durable insert only "
        "(the dispatcher still wakes per create and finds no free slot). 'live': default "
        "slots, the dispatcher runs each `true` through bwrap at the same time on the same 2 "
        "cores - a lower, mixed figure."
    )
    rep.notes.append(
        "durability: a 200 means committed. sync=NORMAL (default, WAL) survives a process "
        "crash / kill -9 but may lose the last commits on power loss; sync=FULL fsyncs each "
        "commit (the figure depends on this disk)."
    )


def phase_e2e(
    rep: Report, root: Path, sz: Sizes, rss: dict[str, str], slots_list: tuple[int, ...]
) -> None:
    sec = "2 end-to-end"
    for slots in slots_list:
        progress(f"[e2e] {sz.e2e_tasks} x `true` through bwrap, JOBGATE_SLOTS={slots}")
        with running(root / f"e2e-{slots}", {"JOBGATE_SLOTS": str(slots)}) as srv:
            warm = asyncio.run(post_many(srv, 2, 10, 10))
            wait_all_final(srv, warm.done, 60)
            cpu0, own0, t0 = srv.cpu(), srv.own_cpu(), time.perf_counter()
            load = asyncio.run(post_many(srv, 8, sz.e2e_tasks, 60))
            submitted = time.perf_counter()
            done_at, counts = wait_all_final(srv, warm.done + load.done, 30 + load.done / 5)
            cpu1, own1 = srv.cpu(), srv.own_cpu()
            wall = done_at - t0
            ev = events_by_job(srv.db, load.ids)
            starts = [e["CREATED"] for e in ev.values()]
            ends = [max(v for k, v in e.items() if k in FINAL) for e in ev.values()]
            span = max(ends) - min(starts)
            rate = load.done / wall
            rep.add(
                sec,
                f"slots={slots}: tasks/s (submit all -> all final)",
                f"{rate:,.0f}/s ({load.done} in {wall:.2f} s; events span {span:.2f} s)",
                ">= 150/s",
                rate >= 150,
            )
            rep.add(
                sec,
                f"slots={slots}: submission alone",
                f"{submitted - t0:.2f} s ({load.done / (submitted - t0):,.0f} creates/s)",
            )
            bad = {k: v for k, v in counts.items() if k != "COMPLETE"}
            rep.add(sec, f"slots={slots}: final states", "all COMPLETE" if not bad else str(bad))
            stage: dict[str, list[float]] = {"queued": [], "initializing": [], "running": []}
            for e in ev.values():
                if {"INITIALIZING", "RUNNING", "COMPLETE"} <= e.keys():
                    stage["queued"].append(e["INITIALIZING"] - e["CREATED"])
                    stage["initializing"].append(e["RUNNING"] - e["INITIALIZING"])
                    stage["running"].append(e["COMPLETE"] - e["RUNNING"])
            rep.add(
                sec,
                f"slots={slots}: mean time in INITIALIZING / RUNNING",
                f"{ms(sum(stage['initializing']) / max(len(stage['initializing']), 1))} / "
                f"{ms(sum(stage['running']) / max(len(stage['running']), 1))}",
            )
            n = max(load.done, 1)
            rep.add(
                sec,
                f"slots={slots}: CPU per task, server process + its children (sandbox)",
                f"{ms((own1 - own0) / n)} + {ms(((cpu1 - cpu0) - (own1 - own0)) / n)}",
            )
            rss[f"e2e server slots={slots}, after {load.done} tasks"] = mib(srv.rss())
    rep.notes.append(
        "end-to-end: 8 clients submit all tasks at once; the clock runs from the first POST "
        "until the database shows every task final. INITIALIZING covers claim + task "
        "directory + backend submit; RUNNING covers the bwrap process and the final "
        "bookkeeping until the COMPLETE transition."
    )


def phase_latency(rep: Report, root: Path, sz: Sizes) -> None:
    sec = "3 latency"
    progress(f"[latency] {sz.latency_tasks} tasks one at a time on an idle server (default slots)")
    with running(root / "latency") as srv:
        ids: list[str] = []
        post_lat: list[float] = []
        with httpx.Client(base_url=srv.url + TES, timeout=30) as c:
            for _ in range(3):  # warm-up
                tid = c.post("/tasks", content=SMALL_BODY, headers=JSON_HEADERS).json()["id"]
                wait_one_final(srv, tid, 20)
            for _ in range(sz.latency_tasks):
                t0 = time.perf_counter()
                r = c.post("/tasks", content=SMALL_BODY, headers=JSON_HEADERS)
                post_lat.append(time.perf_counter() - t0)
                tid = r.json()["id"]
                ids.append(tid)
                wait_one_final(srv, tid, 20)
                time.sleep(0.05)  # let the server go idle again
        ev = events_by_job(srv.db, ids)
    to_init = [e["INITIALIZING"] - e["CREATED"] for e in ev.values()]
    to_run = [e["RUNNING"] - e["CREATED"] for e in ev.values()]
    to_done = [e["COMPLETE"] - e["CREATED"] for e in ev.values() if "COMPLETE" in e]
    rep.add(sec, "submit -> RUNNING p50 / p99", f"{ms(pct(to_run, 50))} / {ms(pct(to_run, 99))}")
    rep.add(
        sec,
        "submit -> INITIALIZING (claimed) p50 / p99",
        f"{ms(pct(to_init, 50))} / {ms(pct(to_init, 99))}",
    )
    rep.add(sec, "submit -> COMPLETE p50 / p99", f"{ms(pct(to_done, 50))} / {ms(pct(to_done, 99))}")
    rep.add(
        sec,
        "POST /tasks round trip p50 / p99",
        f"{ms(pct(post_lat, 50))} / {ms(pct(post_lat, 99))}",
    )
    rep.notes.append(
        "latency: from the job_events table (creation event -> first RUNNING event), i.e. "
        "server clocks only; the bench polls the database read-only, not the API."
    )


def wait_one_final(srv: Server, task_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    con = sqlite3.connect(f"file:{srv.db}?mode=ro", uri=True, timeout=30)
    try:
        while time.monotonic() < deadline:
            row = con.execute("SELECT state FROM jobs WHERE id = ?", (task_id,)).fetchone()
            if row and row[0] in FINAL:
                return
            time.sleep(0.002)
    finally:
        con.close()
    raise RuntimeError(f"task {task_id} not final after {timeout}s")


async def seed(data_dir: Path, n: int) -> list[str]:
    """Insert ``n`` COMPLETE tasks (with a realistic log) straight into a new database."""
    from sqlalchemy import update

    from jobgate.domain.models import new_job_id, now, rfc3339
    from jobgate.domain.states import State
    from jobgate.store.database import make_engine, migrate
    from jobgate.store.jobs import JobStore, NewJob
    from jobgate.store.schema import jobs

    engine = make_engine(f"sqlite+aiosqlite:///{data_dir / 'jobgate.db'}")
    try:
        await migrate(engine)
        store = JobStore(engine)
        ids: list[str] = []
        batch = 5000
        for start in range(0, n, batch):
            new = []
            for k in range(start, min(n, start + batch)):
                spec = {
                    "name": f"seed-{k:06d}",
                    "executors": [
                        {"image": "alpine", "command": ["sh", "-c", f"echo {k}"], "workdir": "/"}
                    ],
                    "resources": {"cpu_cores": 1, "ram_gb": 1.0},
                    "tags": {"bench": "seed", "shard": str(k % 16)},
                }
                new.append(
                    NewJob(id=new_job_id(), spec=spec, backend="local", state=State.COMPLETE)
                )
            await store.create(new, source="bench")
            ids.extend(j.id for j in new)
        t = rfc3339(now())
        logs = [
            {
                "logs": [
                    {"start_time": t, "end_time": t, "stdout": "42\n", "stderr": "", "exit_code": 0}
                ],
                "metadata": {"backend": "local", "runtime": "bwrap", "attempt": "1"},
                "start_time": t,
                "end_time": t,
                "outputs": [],
            }
        ]
        async with engine.begin() as conn:
            await conn.execute(update(jobs).values(logs=logs))
    finally:
        await engine.dispose()
    return ids


def phase_read(rep: Report, root: Path, sz: Sizes, rss: dict[str, str]) -> None:
    sec = "4 read"
    data = root / "read"
    progress(f"[read] seeding {sz.seed_tasks:,} COMPLETE tasks into a fresh database")
    t0 = time.perf_counter()
    data.mkdir(parents=True)
    ids = asyncio.run(seed(data, sz.seed_tasks))
    progress(f"  seeded in {time.perf_counter() - t0:.1f} s")
    stored = f"{sz.seed_tasks // 1000}k"
    with running(data) as srv:
        time.sleep(0.5)
        rss[f"read server, idle, {stored} tasks stored"] = mib(srv.rss())
        for view in ("MINIMAL", "FULL"):
            load = asyncio.run(get_tasks(srv, ids, view, sz.gets, 30))
            p99 = pct(load.latencies, 99)
            rep.add(
                sec,
                f"GET task {view} p50 / p99 ({stored} stored)",
                f"{ms(pct(load.latencies, 50))} / {ms(p99)}",
                "p99 < 10 ms",
                p99 < 0.010,
            )
            rep.add(
                sec,
                f"GET task {view}: server CPU per request",
                ms(load.server_cpu / max(load.done, 1)),
            )
        for view in ("MINIMAL", "BASIC"):
            load = asyncio.run(get_many(srv, "/tasks", {"view": view}, sz.lists, 30))
            p99 = pct(load.latencies, 99)
            rep.add(
                sec,
                f"list {view} (256/page) p50 / p99 ({stored} stored)",
                f"{ms(pct(load.latencies, 50))} / {ms(p99)}",
                "p99 < 50 ms",
                p99 < 0.050,
            )
            rep.add(
                sec,
                f"list {view}: server CPU per request",
                ms(load.server_cpu / max(load.done, 1)),
            )
        rss[f"read server, after reads, {stored} tasks stored"] = mib(srv.rss())
    rep.notes.append(
        "read: one client, sequential requests, keep-alive; latency is the client's round "
        "trip (includes httpx, ~0.2-0.4 ms). Seeded tasks carry a spec with tags/resources "
        "and one task log with stdout, like a finished task."
    )


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run (< 60 s)")
    ap.add_argument(
        "--only",
        default="create,e2e,latency,read",
        help="comma-separated phases: create, e2e, latency, read (default: all)",
    )
    ap.add_argument("--slots", default="2,8", help="JOBGATE_SLOTS values for e2e (default 2,8)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    ap.add_argument(
        "--src", type=Path, help="run the servers from this src/ dir (e.g. another checkout)"
    )
    args = ap.parse_args(argv)
    if args.src is not None:
        Server.src = args.src.resolve()
        sys.path.insert(0, str(Server.src))  # the seeding uses the same store code
    if shutil.which("bwrap") is None:
        progress("bubblewrap (bwrap) is not installed: the benchmark measures the bwrap runtime")
        return 2
    sz = QUICK_SIZES if args.quick else FULL_SIZES
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = phases - {"create", "e2e", "latency", "read"}
    if unknown:
        ap.error(f"unknown phases: {sorted(unknown)}")
    slots = tuple(int(s) for s in args.slots.split(","))

    root = Path(tempfile.mkdtemp(prefix="jobgate-bench-"))
    rep = Report()
    rss: dict[str, str] = {}
    started = time.perf_counter()
    progress(f"jobgate bench ({'quick' if args.quick else 'full'}) in {root}")
    try:
        for name, run in (
            ("create", lambda: phase_create(rep, root, sz, rss)),
            ("e2e", lambda: phase_e2e(rep, root, sz, rss, slots)),
            ("latency", lambda: phase_latency(rep, root, sz)),
            ("read", lambda: phase_read(rep, root, sz, rss)),
        ):
            if name in phases:
                noise = Noise()
                run()
                rep.add("0 machine", f"other processes' CPU during '{name}'", noise.others())
        for what, value in rss.items():
            rep.add("5 memory", f"server RSS, {what}", value)
    finally:
        if args.keep:
            progress(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    cpus = os.cpu_count()
    print(
        f"\njobgate TES benchmark ({'quick' if args.quick else 'full'}), {cpus} CPUs, "
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, runtime bwrap; "
        f"took {time.perf_counter() - started:.0f} s"
    )
    rep.notes.append(
        f"one machine ({cpus} CPUs): the server, its bwrap children and this load generator "
        "(one Python process, httpx) share the cores; 'CPU per request' figures are the "
        "portable ones (server process incl. its SQLite thread, client = this process)."
    )
    rep.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
