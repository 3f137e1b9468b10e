"""jobgate staging benchmark: streamed transfers of one large file per store, with the
gateway's memory watched.

    .venv/bin/python bench/staging_bench.py                 # 1 GiB per phase (~2-4 min)
    .venv/bin/python bench/staging_bench.py --size-mib 128  # quick
    .venv/bin/python bench/staging_bench.py --only s3-in,s3-out

Starts, on 127.0.0.1 and free ports: a moto S3 server (``python -m moto.server``), a
pyftpdlib FTP server, ``python -m http.server``, and one ``jobgate serve`` that
allow-lists 127.0.0.1. Each phase runs one TES task whose input (``*-in``) or output
(``*-out``) is the large file; the transfer time comes from the task's own timestamps
(task start → first executor start for inputs, last executor end → task end for
outputs). The gateway's RSS is sampled every 20 ms: the table shows it before the phase
and its peak during it. Everything lives in a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
from boto3.s3.transfer import TransferConfig

PHASES = ("s3-in", "s3-out", "ftp-in", "ftp-out", "http-in", "file-in", "file-out")
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")
MiB = 1024 * 1024
BUCKET = "bench"
FTP_USER, FTP_PASSWORD = "bench", "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run ``args`` for the duration of the block; yields its pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RssSampler:
    """Samples one process's RSS in a thread; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def now(self) -> int:
        return int(self.proc.memory_info().rss)

    def reset(self) -> int:
        current = self.now()
        self.peak = current
        return current

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_task(api: httpx.Client, task: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    task_id = api.post("/tasks", json=task).raise_for_status().json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
        if body["state"] in FINAL:
            if body["state"] != "COMPLETE":
                raise RuntimeError(f"task failed: {body.get('logs')}")
            return body
        time.sleep(0.1)
    raise RuntimeError(f"task {task_id} did not finish")


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of incompressible data (one random MiB repeated)."""
    block = os.urandom(MiB)
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, MiB)])
            left -= MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--only", default=",".join(PHASES))
    parser.add_argument("--parallel", type=int, default=4, help="JOBGATE_STAGING_PARALLEL")
    args = parser.parse_args()
    phases = [p for p in args.only.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="jg-staging-bench-") as tmp:
        root = Path(tmp)
        for sub in ("ftp", "http", "allowed", "data"):
            (root / sub).mkdir()
        print(f"making a {args.size_mib} MiB file ...", flush=True)
        big = root / "allowed" / "big.bin"
        make_file(big, size)
        os.link(big, root / "ftp" / "big.bin")
        os.link(big, root / "http" / "big.bin")

        s3_port, ftp_port, http_port, jg_port = (free_port() for _ in range(4))
        aws = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        py = sys.executable
        moto_cmd = [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
        ftp_cmd = [py, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(ftp_port), "-w"]
        ftp_cmd += ["-d", str(root / "ftp"), "-u", FTP_USER, "-P", FTP_PASSWORD]
        http_cmd = [py, "-m", "http.server", "-b", "127.0.0.1", str(http_port)]
        http_cmd += ["-d", str(root / "http")]
        jg_cmd = [py, "-m", "jobgate", "serve", "--port", str(jg_port)]
        jg_cmd += ["--data-dir", str(root / "data"), "--log-level", "warning"]
        with contextlib.ExitStack() as stack:
            stack.enter_context(process(moto_cmd, root / "moto.log"))
            quiet = {**os.environ, "PYTHONWARNINGS": "ignore"}  # pyftpdlib uses asyncore
            stack.enter_context(process(ftp_cmd, root / "ftp.log", env=quiet))
            stack.enter_context(process(http_cmd, root / "http.log"))
            env = {
                **os.environ,
                **aws,
                "JOBGATE_ALLOWED_DIRS": str(root / "allowed"),
                "JOBGATE_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
                "JOBGATE_STAGING_ALLOWED_HOSTS": "127.0.0.1",
                "JOBGATE_STAGING_PARALLEL": str(args.parallel),
                "JOBGATE_POLL_INTERVAL": "0.2",
                "JOBGATE_AUTH": "none",  # loopback only: the bench measures staging
            }
            jg_pid = stack.enter_context(process(jg_cmd, root / "jobgate.log", env=env))
            for port in (s3_port, ftp_port, http_port, jg_port):
                wait_port(port)

            s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", **_creds(aws))
            s3.create_bucket(Bucket=BUCKET)
            reference = ""
            if "s3-in" in phases:
                print("uploading it to moto ...", flush=True)
                started = time.monotonic()
                s3.upload_file(
                    str(big), BUCKET, "big.bin", Config=TransferConfig(multipart_chunksize=64 * MiB)
                )
                rate = size / 1e6 / (time.monotonic() - started)
                # moto is pure Python: its ingest rate bounds every S3 upload here.
                reference = f"reference: boto3 upload_file into moto, 64 MiB parts: {rate:.0f} MB/s"

            ftp = f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{ftp_port}"
            sources = {
                "s3": f"s3://{BUCKET}/big.bin",
                "ftp": f"{ftp}/big.bin",
                "http": f"http://127.0.0.1:{http_port}/big.bin",
                "file": big.as_uri(),
            }
            targets = {
                "s3": f"s3://{BUCKET}/out.bin",
                "ftp": f"{ftp}/out.bin",
                "file": (root / "allowed" / "out.bin").as_uri(),
            }
            sampler = RssSampler(jg_pid)
            api = stack.enter_context(
                httpx.Client(base_url=f"http://127.0.0.1:{jg_port}/ga4gh/tes/v1", timeout=60)
            )
            # Warm-up: the first S3 use imports botocore and friends (tens of MiB once).
            s3.put_object(Bucket=BUCKET, Key="warm", Body=b"w")
            run_task(api, _in_task(f"s3://{BUCKET}/warm"))

            rows = []
            for phase in phases:
                store, way = phase.split("-")
                before = sampler.reset()
                if way == "in":
                    task = run_task(api, _in_task(sources[store]))
                    log = task["logs"][-1]
                    seconds = ts(log["logs"][0]["start_time"]) - ts(log["start_time"])
                else:
                    task = run_task(api, _out_task(targets[store], args.size_mib))
                    log = task["logs"][-1]
                    seconds = ts(log["end_time"]) - ts(log["logs"][-1]["end_time"])
                    assert log["outputs"][0]["size_bytes"] == str(size), log["outputs"]
                rows.append((phase, seconds, before, sampler.peak))
                print(f"  {phase}: {seconds:.1f} s", flush=True)
            sampler.stop()

        print()
        print(
            f"staging of one {args.size_mib} MiB file per phase "
            f"(JOBGATE_STAGING_PARALLEL={args.parallel}); "
            "jobgate server RSS sampled every 20 ms"
        )
        head = ("phase", "seconds", "MB/s", "RSS before", "RSS peak", "growth")
        print("{:<9} {:>8} {:>8} {:>11} {:>9} {:>7}".format(*head))
        for phase, seconds, before, peak in rows:
            rate = size / 1e6 / seconds if seconds > 0 else float("inf")
            print(
                f"{phase:<9} {seconds:>8.1f} {rate:>8.0f} {before / MiB:>9.0f} Mi"
                f" {peak / MiB:>7.0f} Mi {(peak - before) / MiB:>5.0f} Mi"
            )
        if reference:
            print(reference)


def _creds(aws: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
        "region_name": aws["AWS_DEFAULT_REGION"],
    }


def _in_task(url: str) -> dict[str, Any]:
    return {
        "name": "bench-staging-in",
        "inputs": [{"url": url, "path": "/data/big.bin"}],
        "executors": [{"image": "alpine", "command": ["true"]}],
    }


def _out_task(url: str, size_mib: int) -> dict[str, Any]:
    return {
        "name": "bench-staging-out",
        "outputs": [{"url": url, "path": "/data/out.bin", "type": "FILE"}],
        "executors": [
            {
                "image": "alpine",
                "command": [
                    "sh",
                    "-c",
                    f"head -c {size_mib}M /dev/urandom > data/out.bin",
                ],
            }
        ],
    }


if __name__ == "__main__":
    main()
