"""What ``/metrics`` costs with many jobs stored: the scrape, and the periodic job count.

Seeds ``-n`` COMPLETE jobs straight into a new SQLite database (as ``tes_bench.py`` does),
times the grouped count behind ``jobgate_jobs`` (one query on the (backend, state) index,
run every ``JOBGATE_METRICS_JOBS_INTERVAL`` seconds, never per scrape), then starts
``jobgate serve`` on it and times ``--scrapes`` sequential scrapes (median, p95; target
50 ms at 1,000,000 jobs).

    .venv/bin/python bench/metrics_bench.py [-n 1000000] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tes_bench import running, seed


async def count_ms(data_dir: Path, rounds: int = 5) -> float:
    from jobgate.store.database import make_engine
    from jobgate.store.jobs import JobStore

    engine = make_engine(f"sqlite+aiosqlite:///{data_dir / 'jobgate.db'}")
    store = JobStore(engine)
    try:
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            await store.counts_by_backend_state()
            samples.append((time.perf_counter() - started) * 1000)
        return min(samples)
    finally:
        store.close()
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="jobs stored")
    ap.add_argument("--scrapes", type=int, default=50)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jobgate-metrics-bench-"))
    try:
        data = root / "data"
        data.mkdir()
        started = time.monotonic()
        asyncio.run(seed(data, args.n))
        print(f"seeded {args.n} jobs in {time.monotonic() - started:.0f}s")
        print(f"job count (grouped query, min of 5): {asyncio.run(count_ms(data)):.1f} ms")
        with running(data, {"JOBGATE_AUTH": "none"}) as srv, httpx.Client() as c:
            c.get(srv.url + "/metrics")
            samples = []
            for _ in range(args.scrapes):
                t = time.perf_counter()
                r = c.get(srv.url + "/metrics")
                samples.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200
            samples.sort()
            p95 = samples[int(len(samples) * 0.95) - 1]
            print(
                f"scrape: median {statistics.median(samples):.1f} ms, p95 {p95:.1f} ms "
                f"({len(r.content)} bytes; target 50 ms)"
            )
            line = next(
                x
                for x in r.text.splitlines()
                if x.startswith('jobgate_jobs{backend="local",state="COMPLETE"}')
            )
            print(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
