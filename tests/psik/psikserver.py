"""A real psik_api 1.0.0 server for the comparison tests, from its own venv
(``make psik-venv``): psik and its dependencies stay out of jobgate's venv."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("JOBGATE_TEST_PSIK_VENV", REPO / ".venv-psik"))


def unavailable() -> str | None:
    """Why a psik_api server cannot start here, or None."""
    if not (VENV / "bin" / "uvicorn").exists() or not (VENV / "bin" / "psik").exists():
        return f"no psik_api venv at {VENV} (make psik-venv)"
    if shutil.which("rc") is None:
        return "the rc shell is not installed (psik's job scripts are rc scripts)"
    return None


class PsikServer:
    """``uvicorn psik_api.main:api`` in local authorization mode (loopback callers only)
    with one local backend, ``default``, whose jobs live under ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / "psik_api.log"

    def start(self, timeout: float = 60) -> PsikServer:
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "psik_api.json"
        backend = {
            "prefix": str(self.base / "jobs"),
            "psik_path": str(VENV / "bin" / "psik"),
            "rc_path": shutil.which("rc"),
            "backend": {"type": "local"},
        }
        config.write_text(json.dumps({"authz": "local", "backends": {"default": backend}}))
        env = {**os.environ, "PSIK_API_CONFIG": str(config), "VIRTUAL_ENV": str(VENV)}
        env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
        self.proc = subprocess.Popen(
            [str(VENV / "bin" / "uvicorn"), "psik_api.main:api", "--port", str(self.port)],
            env=env,
            cwd=self.base,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"psik_api exited: {self.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/backends", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"psik_api did not start: {self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
