"""Pulsar backend benchmark: N trivial tasks through jobgate → Pulsar, beside the same N
jobs sent straight to Pulsar's REST API, and prints jobs/s both ways.

    .venv/bin/python bench/pulsar_bench.py              # 200 tasks, REST and AMQP
    .venv/bin/python bench/pulsar_bench.py -n 50 --no-amqp

Each way starts its own Pulsar server (``queued_python``, ``--concurrency`` workers) in a
temporary directory; jobgate's server, Pulsar and the load generator share this machine.
"Pulsar alone" is what a client that speaks Pulsar's API itself gets: setup, one file
upload, submit, status polls until complete, one download, as jobgate does per task.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import Server
from tests.pulsar.pulsarserver import (
    AMQP_URL,
    PulsarServer,
    rabbitmq_unavailable,
    unavailable,
)
from tests.pulsar.servers import pulsar_config, pulsar_entry

TES = "/ga4gh/tes/v1"
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")
TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        body = b"true\ntar -cf out.tar run.sh\n"
        info = tarfile.TarInfo("run.sh")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


async def pulsar_alone(pulsar: PulsarServer, n: int) -> float:
    """Seconds for ``n`` jobs sent to Pulsar directly (all at once, polled at 0.2 s)."""
    payload = _tar()
    tok = {"private_token": pulsar.token}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=pulsar.url, timeout=60, limits=limits) as http:

        async def one(i: int) -> None:
            jid = f"direct-{i}"
            dirs = (await http.post("/jobs", params={"job_id": jid, **tok})).json()
            up = {"name": "in.tar", "type": "input", **tok}
            await http.post(f"/jobs/{jid}/files", params=up, content=payload)
            cmd = f"cd {dirs['working_directory']} && tar -xf ../inputs/in.tar && sh run.sh"
            await http.post(f"/jobs/{jid}/submit", params={"command_line": cmd, **tok})
            while True:  # polled, as a REST client of Pulsar must
                status = (await http.get(f"/jobs/{jid}/status", params=tok)).json()
                if status["status"] == "complete":
                    break
                await asyncio.sleep(0.2)
            await http.get(
                f"/jobs/{jid}/files", params={"name": "out.tar", "type": "output_workdir", **tok}
            )
            await http.delete(f"/jobs/{jid}", params=tok)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


def through_jobgate(base: Path, entry: dict[str, object], n: int, poll: str) -> tuple[float, float]:
    """Seconds for ``n`` TES tasks through a jobgate server whose default is ``entry``,
    and the CPU seconds the server used meanwhile (less at the mercy of a loaded machine
    than the wall time)."""
    base.mkdir(parents=True)
    config = pulsar_config(base / "backends.yml", {"pulsar": entry}, "pulsar")
    env = {"JOBGATE_CONFIG_FILE": str(config), "JOBGATE_POLL_INTERVAL": poll}
    srv = Server(base / "data", env).start(timeout=60)
    try:
        assert srv.proc is not None
        proc = psutil.Process(srv.proc.pid)
        with httpx.Client(base_url=srv.url + TES, timeout=60) as tes:
            cpu0 = proc.cpu_times()
            t0 = time.perf_counter()
            ids = [tes.post("/tasks", json=TASK).json()["id"] for _ in range(n)]
            pending = set(ids)
            bad: list[str] = []
            deadline = time.monotonic() + max(120.0, n * 2.0)
            while pending:
                if time.monotonic() > deadline:
                    states = [tes.get(f"/tasks/{i}").json()["state"] for i in sorted(pending)]
                    raise SystemExit(f"{len(pending)} tasks not final in time: {states[:10]}")
                time.sleep(0.2)
                r = tes.get("/tasks", params={"page_size": 2000, "view": "MINIMAL"})
                for t in r.json()["tasks"]:
                    if t["id"] in pending and t["state"] in FINAL:
                        pending.discard(t["id"])
                        if t["state"] != "COMPLETE":
                            bad.append(t["id"])
            took = time.perf_counter() - t0
            cpu1 = proc.cpu_times()
            cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            if bad:
                print(f"  warning: {len(bad)} tasks did not COMPLETE; the first:")
                for task_id in bad[:3]:
                    t = tes.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
                    logs = t.get("logs", [])
                    notes = [line for log in logs for line in log.get("system_logs", [])]
                    print(f"    {task_id} {t['state']}: {notes[-3:]}")
        return took, cpu
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--no-amqp", action="store_true")
    args = ap.parse_args()
    reason = unavailable()
    if reason:
        sys.exit(reason)
    n = args.n
    rows: list[tuple[str, float]] = []
    cpus: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pulsar-bench-") as tmp:
        root = Path(tmp)
        pulsar = PulsarServer(root / "p-direct", concurrent=args.concurrency).start()
        try:
            rows.append(("Pulsar REST alone", asyncio.run(pulsar_alone(pulsar, n))))
            print(f"  Pulsar alone: {rows[-1][1]:.1f} s", flush=True)
        finally:
            pulsar.stop()
        pulsar = PulsarServer(root / "p-rest", concurrent=args.concurrency).start()
        try:
            took, cpu = through_jobgate(root / "gw-rest", pulsar_entry(pulsar), n, "0.2")
            rows.append(("jobgate -> Pulsar (REST)", took))
            cpus[rows[-1][0]] = cpu
        finally:
            pulsar.stop()
        if not args.no_amqp and not rabbitmq_unavailable():
            manager = f"bench{int(time.time())}"
            pulsar = PulsarServer(
                root / "p-amqp", amqp_url=AMQP_URL, concurrent=args.concurrency, managers=(manager,)
            ).start()
            try:
                entry = pulsar_entry(pulsar, amqp_url=AMQP_URL, manager=manager)
                took, cpu = through_jobgate(root / "gw-amqp", entry, n, "5")
                rows.append(("jobgate -> Pulsar (AMQP)", took))
                cpus[rows[-1][0]] = cpu
            finally:
                pulsar.stop()
    base = rows[0][1]
    print(f"{n} `true` tasks, all submitted at once; server, Pulsar and client on one machine")
    for name, took in rows:
        rel = base / took * 100
        extra = ""
        if name in cpus:
            extra = (
                f"{(took - base) / n * 1000:+.1f} ms/task vs alone; "
                f"jobgate CPU {cpus[name] / n * 1000:.1f} ms/task"
            )
        print(
            f"  {name:26s} {n / took:7.1f} tasks/s  ({took:6.1f} s, {rel:5.1f}% of alone) {extra}"
        )


if __name__ == "__main__":
    main()
