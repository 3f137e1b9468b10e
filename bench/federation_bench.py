"""Forwarding cost: N trivial tasks through a gateway to two remote jobgate instances.

Starts two ``jobgate serve`` remotes and a gateway whose config file declares them as
``tes`` backends with routing (load-balanced), submits N tasks (``true``) to the gateway in
bulk, waits until all are final, and prints tasks/s end to end, the gateway's CPU per
forwarded task, and the requests the gateway sent to the remotes per task (from its own
count, logged at shutdown; the target is <= 3: create, a share of the batched status
listings, one FULL read).

    .venv/bin/python bench/federation_bench.py [-n 1000]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import Server

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}
REMOTE_ENV = {"JOBGATE_SLOTS": "8"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="tasks")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jobgate-federation-bench-"))
    remotes = [Server(root / name, REMOTE_ENV).start(timeout=90) for name in ("a", "b")]
    config = root / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backends": {
                    name: {"type": "tes", "url": srv.url + "/ga4gh/tes/v1", "capacity": 8}
                    for name, srv in zip(("a", "b"), remotes, strict=True)
                },
                "routing": {"candidates": ["a", "b"]},
            }
        )
    )
    gw = Server(root / "gw", {"JOBGATE_CONFIG_FILE": str(config)}, log_level="info")
    gw.start(timeout=90)
    assert gw.proc is not None
    ps = psutil.Process(gw.proc.pid)
    try:
        cpu0 = sum(ps.cpu_times()[:2])
        t0 = time.monotonic()
        with httpx.Client(base_url=gw.url, timeout=120) as http:
            for start in range(0, args.n, 500):
                jobs = [
                    {"script": "true", "name": f"t{i}"}
                    for i in range(start, min(args.n, start + 500))
                ]
                r = http.post("/api/v1/jobs/bulk", json={"jobs": jobs})
                r.raise_for_status()
            t_submitted = time.monotonic()
            done = 0
            counts: dict[str, int] = {}
            while time.monotonic() - t0 < args.timeout:
                r = http.post("/api/v1/jobs/summary", json={"group_by": ["state"]})
                r.raise_for_status()
                counts = {g["state"]: g["count"] for g in r.json()["groups"]}
                done = sum(
                    counts.get(s, 0)
                    for s in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
                )
                if done >= args.n:
                    break
                time.sleep(0.5)
            t1 = time.monotonic()
        cpu = sum(ps.cpu_times()[:2]) - cpu0
    finally:
        gw.stop()
        for srv in remotes:
            srv.stop()
    sent = sum(int(m) for m in re.findall(r"(\d+) requests sent to", gw.log_path.read_text()))
    print(f"tasks: {args.n}, final: {done} {counts}")
    print(f"submit (bulk): {t_submitted - t0:.1f} s")
    print(f"end to end: {t1 - t0:.1f} s, {args.n / (t1 - t0):.1f} tasks/s")
    print(f"gateway CPU: {cpu:.1f} s, {cpu / args.n * 1000:.1f} ms per forwarded task")
    print(f"requests to remotes: {sent}, {sent / args.n:.2f} per task (target <= 3)")
    return 0 if done >= args.n else 1


if __name__ == "__main__":
    raise SystemExit(main())
