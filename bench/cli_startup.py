"""CPU a ``jobgate`` client command costs from exec to exit: ``version``, ``status ID``, ``ls``.

Starts one ``jobgate serve`` (SQLite, no authentication) on a temporary data directory,
submits one job, then runs each command ``--runs`` times as a fresh process (the installed
``jobgate`` script, as a user types it) and prints the user+system CPU of the child (min
and median over the runs: the min is the figure least disturbed by other processes on a
shared machine), next to the 150 ms target. Also lists the server-stack modules each
command imported (there must be none).

    .venv/bin/python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from tes_bench import running

TARGET_MS = 150
SERVER_STACK = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic", "jobgate.api")


def cpu_ms(argv: list[str], env: dict[str, str]) -> float:
    """User+system CPU of one run of ``argv`` (and its children), in ms."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def imported_server_modules(args: list[str], env: dict[str, str]) -> list[str]:
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['jobgate', *{args!r}]\n"
        "try:\n    runpy.run_module('jobgate', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.startswith({SERVER_STACK!r})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return eval(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args(argv)
    script = shutil.which("jobgate", path=str(Path(sys.executable).parent)) or "jobgate"
    root = Path(tempfile.mkdtemp(prefix="jobgate-cli-bench-"))
    try:
        with running(root / "data", {"JOBGATE_AUTH": "none"}) as srv:
            job = httpx.post(
                srv.url + "/api/v1/jobs", json={"name": "bench", "script": "true"}
            ).json()
            env = {**os.environ, "JOBGATE_URL": srv.url}
            commands = {
                "version": ["version"],
                "status ID": ["status", job["id"]],
                "ls": ["ls"],
                "--help": ["--help"],
            }
            print(f"{'command':<12} {'min ms':>8} {'median ms':>10} {'target':>7}  server stack")
            for name, cmd in commands.items():
                samples = [cpu_ms([script, *cmd], env) for _ in range(args.runs)]
                stack = imported_server_modules(cmd, env)
                print(
                    f"{name:<12} {min(samples):8.0f} {statistics.median(samples):10.0f} "
                    f"{TARGET_MS:>7}  {', '.join(stack) or 'none'}"
                )
            with open("/proc/loadavg") as f:
                print(f"load average during the run: {f.read().split()[0]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
