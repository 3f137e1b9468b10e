"""jobgate end-to-end benchmark: trivial `true` TES tasks through `jobgate serve`.

    .venv/bin/python bench/e2e_bench.py              # 1,000 tasks; bwrap, process; 2, 8 slots
    .venv/bin/python bench/e2e_bench.py -n 200 --runtimes bwrap --slots 2
    .venv/bin/python bench/e2e_bench.py --dispatchers 1,3   # also serve --no-dispatch + 3
    .venv/bin/python bench/e2e_bench.py --only create       # TES creates through wrk
    .venv/bin/python bench/e2e_bench.py --src /other/checkout/src  # another tree's server

Phases (``--only``): ``e2e`` (N tasks submitted by 8 clients at once, until all are
final: tasks/s, submit → RUNNING and submit → final p50/p99 from the task's own event
times, server CPU per task, write transactions per task from ``/metrics``), ``alone``
(one task at a time on an idle server: submit → final), ``create`` (``wrk`` posting TES
tasks while the only slot is busy, so every task stays queued: requests/s and server CPU
per 1,000 creates). Each run has its own server and temporary data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tes_bench import (  # a sibling script, not a package
    FINAL,
    JSON_HEADERS,
    SMALL_BODY,
    TES,
    Noise,
    Report,
    Server,
    events_by_job,
    ms,
    pct,
    post_many,
    progress,
    wait_all_final,
    wait_one_final,
    wait_state,
)

_COUNT = re.compile(r'^jobgate_db_transaction_seconds_count\{kind="(\w+)"\} (\S+)$', re.M)
_COMMITS = re.compile(r"^jobgate_db_commits_total (\S+)$", re.M)


def transactions(url: str) -> dict[str, float]:
    """Store operations the server counted so far, by kind (read, write), and its write
    commits (``commit``: fewer than the writes where several shared one; absent before
    group commit, where each write was its own)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {kind: float(n) for kind, n in _COUNT.findall(text)}
    commits = _COMMITS.search(text)
    out["commit"] = float(commits.group(1)) if commits else out.get("write", 0.0)
    return out


class Dispatcher:
    """``jobgate dispatcher`` on the server's data dir (a process of its own)."""

    def __init__(self, srv: Server, index: int) -> None:
        self.srv = srv
        self.log_path = srv.data_dir.parent / f"{srv.data_dir.name}-dispatcher{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dispatcher:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, *Server.launcher, "dispatcher"),
                    *("--data-dir", str(self.srv.data_dir), "--log-level", "warning"),
                ],
                env=self.srv.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NoDispatch(Server):
    """``jobgate serve --no-dispatch``: the API alone."""

    serve_args = ("--no-dispatch",)


def multi_process_cli() -> str | None:
    """Why ``--dispatchers N`` (N > 1) cannot run with this jobgate, or None."""
    env = dict(os.environ)
    if Server.src is not None:
        env["PYTHONPATH"] = str(Server.src)
    run = [sys.executable, *Server.launcher]
    serve = subprocess.run([*run, "serve", "--help"], env=env, capture_output=True, text=True)
    disp = subprocess.run([*run, "dispatcher", "--help"], env=env, capture_output=True, text=True)
    missing = []
    if "--no-dispatch" not in serve.stdout:
        missing.append("`jobgate serve --no-dispatch`")
    if disp.returncode != 0:
        missing.append("`jobgate dispatcher`")
    if not missing:
        return None
    return (
        f"--dispatchers > 1 needs {' and '.join(missing)}, which this jobgate lacks "
        "(multi-process dispatchers); run it against a tree that has them (--src)"
    )


class Fleet:
    """The server and any dispatcher processes of one run; CPU summed over them all."""

    def __init__(self, data_dir: Path, env: dict[str, str], dispatchers: int) -> None:
        self.dispatchers = dispatchers
        self.srv = (NoDispatch if dispatchers > 1 else Server)(data_dir, env)
        self.others: list[Dispatcher] = []

    def __enter__(self) -> Fleet:
        self.srv.start()
        if self.dispatchers > 1:
            self.others = [Dispatcher(self.srv, i).start() for i in range(self.dispatchers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for d in self.others:
            d.stop()
        self.srv.stop()

    def _procs(self) -> list[psutil.Process]:
        procs = [self.srv.ps] + [psutil.Process(d.proc.pid) for d in self.others if d.proc]
        return [p for p in procs if p is not None]

    def cpu(self) -> tuple[float, float]:
        """(CPU of the gateway processes, CPU of their reaped children: sandboxes, tasks)."""
        own = kids = 0.0
        for p in self._procs():
            t = p.cpu_times()
            own += t.user + t.system
            kids += t.children_user + t.children_system
        return own, kids


def gateway_env(runtime: str, slots: int) -> dict[str, str]:
    return {"JOBGATE_RUNTIME": runtime, "JOBGATE_SLOTS": str(slots)}


PROFILE: Path | None = None
"""Where ``--profile`` writes py-spy's collapsed stacks of the e2e phase's server."""


@contextlib.contextmanager
def profiled(pid: int, name: str) -> Iterator[None]:
    """py-spy (``pip install py-spy``) samples the server meanwhile, when ``--profile``."""
    if PROFILE is None:
        yield
        return
    out = PROFILE / f"{name}.txt"
    spy = subprocess.Popen(
        ["py-spy", "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(out), "-t"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        progress(f"  profile in {out}")
        for part, share in split(out):
            progress(f"  {share * 100:5.1f}%  {part}")


SPLIT = (  # a sample goes to the first of these that one of its frames names
    ("log keeping", ("logfiles.py",)),
    ("task dir, staging", ("taskdir.py", "jobgate/staging/")),
    ("sandbox start/stop (bwrap, cgroups, spawn)", ("jobgate/runtimes/", "subprocess.py")),
    ("runner (wait, reap, TaskRun)", ("jobgate/runner/", "jobgate/backends/local")),
    ("DB (SQLAlchemy, sqlite3, store)", ("sqlalchemy/", "sqlite3", "jobgate/store/")),
    ("event fan-out (bus, webhooks, listeners)", ("service/events", "service/webhooks")),
    ("dispatcher bookkeeping", ("jobgate/dispatcher/",)),
    ("pydantic outside the above", ("pydantic",)),
    ("HTTP (uvicorn, fastapi, api, service)", ("uvicorn", "starlette", "fastapi", "jobgate/")),
    ("event loop (uvloop's C code, waits for a core), other", ("",)),
)
LOOP = SPLIT[-1][0]


def split(profile: Path) -> list[tuple[str, float]]:
    """Share of the busy samples of py-spy's collapsed stacks per part of the gateway."""
    counts = dict.fromkeys((name for name, _ in SPLIT), 0)
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if "thread.py:81)" in frames[-1] or "_connection_worker_thread" in frames[-1]:
            continue  # an idle worker thread waiting for work: py-spy counts that wait
        total += int(n)
        if frames[-1].startswith(("Runner.run ", "asyncio_run ", "run_until_complete ")):
            # The event loop's own code (uvloop is C: I/O, timers, callbacks), or the main
            # thread runnable but waiting for a core (py-spy counts that as busy).
            counts[LOOP] += int(n)
            continue
        for name, keys in SPLIT:
            if any(k in f for f in frames[1:] for k in keys):
                counts[name] += int(n)
                break
    return [(name, c / max(total, 1)) for name, c in counts.items()]


def phase_e2e(rep: Report, root: Path, n: int, runtime: str, slots: int, dispatchers: int) -> None:
    sec = f"e2e {runtime} slots={slots} dispatchers={dispatchers}"
    progress(f"[{sec}] {n} x `true`")
    data = root / f"e2e-{runtime}-{slots}-{dispatchers}"
    with Fleet(data, gateway_env(runtime, slots), dispatchers) as fleet:
        srv = fleet.srv
        warm = asyncio.run(post_many(srv, 2, 10, 10))
        wait_all_final(srv, warm.done, 60)
        tx0 = transactions(srv.url)
        assert srv.proc is not None
        with profiled(srv.proc.pid, f"e2e-{runtime}-{slots}-{dispatchers}"):
            (own0, kids0), t0 = fleet.cpu(), time.perf_counter()
            load = asyncio.run(post_many(srv, 8, n, 120))
            submitted = time.perf_counter()
            done_at, counts = wait_all_final(srv, warm.done + load.done, 60 + load.done / 5)
            own1, kids1 = fleet.cpu()
        tx1 = transactions(srv.url)
        ev = events_by_job(srv.db, load.ids)
    wall = done_at - t0
    rate = load.done / wall
    rep.add(sec, "tasks/s (first POST -> all final)", f"{rate:,.0f}/s", ">= 150/s", rate >= 150)
    rep.add(sec, "submission alone", f"{load.done / (submitted - t0):,.0f} creates/s")
    bad = {k: v for k, v in counts.items() if k != "COMPLETE"}
    rep.add(sec, "final states", "all COMPLETE" if not bad else str(bad))
    running = [e["RUNNING"] - e["CREATED"] for e in ev.values() if "RUNNING" in e]
    final = [max(v for k, v in e.items() if k in FINAL) - e["CREATED"] for e in ev.values()]
    rep.add(sec, "submit -> RUNNING p50 / p99", f"{ms(pct(running, 50))} / {ms(pct(running, 99))}")
    rep.add(sec, "submit -> final p50 / p99", f"{ms(pct(final, 50))} / {ms(pct(final, 99))}")
    per = (own1 - own0) / max(load.done, 1)
    rep.add(
        sec,
        "CPU per task: gateway + children (sandbox, task)",
        f"{ms(per)} + {ms((kids1 - kids0) / max(load.done, 1))}",
        "<= 4 ms",
        per <= 0.004,
    )
    writes = (tx1.get("write", 0) - tx0.get("write", 0)) / max(load.done, 1)
    reads = (tx1.get("read", 0) - tx0.get("read", 0)) / max(load.done, 1)
    commits = (tx1["commit"] - tx0["commit"]) / max(load.done, 1)
    where = "" if dispatchers == 1 else " (the API server's only)"
    rep.add(
        sec,
        f"store operations per task{where}",
        f"{writes:.2f} write ({commits:.2f} commits), {reads:.2f} read",
    )


def phase_alone(rep: Report, root: Path, n: int, runtime: str, dispatchers: int) -> None:
    sec = f"alone {runtime} dispatchers={dispatchers}"
    progress(f"[{sec}] {n} tasks one at a time on an idle server")
    data = root / f"alone-{runtime}-{dispatchers}"
    ids: list[str] = []
    seen: list[float] = []
    with Fleet(data, gateway_env(runtime, 2), dispatchers) as fleet:
        srv = fleet.srv
        with httpx.Client(base_url=srv.url + TES, timeout=30) as c:
            for i in range(n + 3):
                t0 = time.perf_counter()
                tid = c.post("/tasks", content=SMALL_BODY, headers=JSON_HEADERS).json()["id"]
                wait_one_final(srv, tid, 20)
                if i >= 3:  # the first ones warm caches up
                    seen.append(time.perf_counter() - t0)
                    ids.append(tid)
                time.sleep(0.05)  # idle again
        ev = events_by_job(srv.db, ids)
    final = [max(v for k, v in e.items() if k in FINAL) - e["CREATED"] for e in ev.values()]
    running = [e["RUNNING"] - e["CREATED"] for e in ev.values() if "RUNNING" in e]
    rep.add(sec, "submit -> RUNNING p50 / p99", f"{ms(pct(running, 50))} / {ms(pct(running, 99))}")
    p50 = pct(final, 50)
    shown = f"{ms(p50)} / {ms(pct(final, 99))}"
    rep.add(sec, "submit -> final p50 / p99", shown, "<= 20 ms", p50 <= 0.02)
    rep.add(
        sec,
        "POST -> final seen by the client p50",
        f"{ms(pct(seen, 50))} (polls the database every 2 ms)",
    )


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
"""


def phase_create(rep: Report, root: Path, seconds: float, conns: int, sync: str) -> None:
    sec = f"create (wrk, {conns} connections, sync={sync})"
    wrk = shutil.which("wrk")
    if wrk is None:
        rep.add(sec, "skipped", "wrk is not installed (apt-get install wrk)")
        return
    progress(f"[{sec}] {seconds:g} s of POST /tasks with the only slot busy")
    env = {"JOBGATE_RUNTIME": "process", "JOBGATE_SLOTS": "1", "JOBGATE_SQLITE_SYNCHRONOUS": sync}
    script = root / "post.lua"
    script.write_text(_WRK_SCRIPT.format(body=SMALL_BODY.decode()))
    with Fleet(root / f"create-{sync.lower()}", env, 1) as fleet:
        srv = fleet.srv
        blocker = httpx.post(
            srv.url + TES + "/tasks",
            json={"executors": [{"image": "alpine", "command": ["sleep", "600"]}]},
        ).json()["id"]
        wait_state(srv, blocker, {"RUNNING"}, 30)
        # Warm-up: connections, caches, the first-call costs.
        subprocess.run(
            [wrk, "-t1", f"-c{conns}", "-d1s", "-s", str(script), srv.url + TES + "/tasks"],
            capture_output=True,
            check=True,
        )
        tx0 = transactions(srv.url)
        own0, _ = fleet.cpu()
        out = subprocess.run(
            [
                *(wrk, "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency"),
                *("-s", str(script), srv.url + TES + "/tasks"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        own1, _ = fleet.cpu()
        tx1 = transactions(srv.url)
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {p: v for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M)}
    target = sync == "NORMAL"
    rep.add(sec, "creates/s", f"{rps:,.0f}/s", ">= 1,000/s" if target else "", rps >= 1000)
    per = (own1 - own0) / max(done, 1)
    rep.add(sec, "server CPU per create", ms(per), "<= 1 ms" if target else "", per <= 0.001)
    rep.add(sec, "server CPU per 1,000 creates", f"{(own1 - own0) / max(done, 1) * 1000:.2f} s")
    rep.add(sec, "latency p50 / p99 (wrk)", f"{lat.get('50', '?')} / {lat.get('99', '?')}")
    writes = (tx1.get("write", 0) - tx0.get("write", 0)) / max(done, 1)
    commits = (tx1["commit"] - tx0["commit"]) / max(done, 1)
    rep.add(sec, "writes (commits) per create", f"{writes:.2f} ({commits:.2f})")
    if errors:
        rep.add(sec, "non-2xx answers", errors.group(1))


@contextlib.contextmanager
def temp_root(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="jobgate-e2e-"))
    try:
        yield root
    finally:
        if keep:
            progress(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--tasks", type=int, default=1000, help="tasks per e2e run")
    ap.add_argument("--alone", type=int, default=30, help="tasks of the 'alone' phase")
    ap.add_argument("--runtimes", default="bwrap,process")
    ap.add_argument("--slots", default="2,8", help="JOBGATE_SLOTS values (default 2,8)")
    ap.add_argument(
        "--dispatchers",
        default="1",
        help="1: `jobgate serve` alone; N > 1: `serve --no-dispatch` + N `jobgate dispatcher`",
    )
    ap.add_argument("--only", default="e2e,alone", help="phases: e2e, alone, create")
    ap.add_argument("--create", action="store_true", help="also run the create phase")
    ap.add_argument("--create-seconds", type=float, default=5.0)
    ap.add_argument("--create-connections", type=int, default=16)
    ap.add_argument("--sync", default="NORMAL", help="create phase: SQLite synchronous values")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    ap.add_argument("--src", type=Path, help="run the servers from this src/ dir")
    ap.add_argument(
        "--profile", type=Path, help="write py-spy's collapsed stacks of each e2e run here"
    )
    args = ap.parse_args(argv)
    global PROFILE
    if args.profile is not None:
        PROFILE = args.profile.resolve()
        PROFILE.mkdir(parents=True, exist_ok=True)
    if args.src is not None:
        Server.src = args.src.resolve()
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    if args.create:
        phases.add("create")
    unknown = phases - {"e2e", "alone", "create"}
    if unknown:
        ap.error(f"unknown phases: {sorted(unknown)}")
    runtimes = [r for r in args.runtimes.split(",") if r]
    slots = [int(s) for s in args.slots.split(",")]
    fleets = [int(d) for d in args.dispatchers.split(",")]
    if "bwrap" in runtimes and shutil.which("bwrap") is None:
        progress("bubblewrap (bwrap) is not installed: use --runtimes process")
        return 2
    if any(d > 1 for d in fleets) and (why := multi_process_cli()) is not None:
        progress(why)
        return 2
    rep = Report()
    started = time.perf_counter()
    with temp_root(args.keep) as root:
        for name in ("e2e", "alone", "create"):
            if name not in phases:
                continue
            noise = Noise()
            if name == "e2e":
                for d in fleets:
                    for runtime in runtimes:
                        for s in slots:
                            phase_e2e(rep, root, args.tasks, runtime, s, d)
            elif name == "alone":
                for d in fleets:
                    for runtime in runtimes:
                        phase_alone(rep, root, args.alone, runtime, d)
            else:
                for sync in args.sync.split(","):
                    phase_create(rep, root, args.create_seconds, args.create_connections, sync)
            rep.add("machine", f"other processes' CPU during '{name}'", noise.others())
    print(
        f"\njobgate end-to-end benchmark, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}; took {time.perf_counter() - started:.0f} s"
    )
    rep.notes.append(
        "the gateway, its sandboxes and this load generator share the machine: tasks/s and "
        "latencies move with other load; CPU per task (from /proc of the gateway processes) "
        "is the stable figure."
    )
    rep.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
