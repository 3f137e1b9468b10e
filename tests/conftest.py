"""Shared fixtures: a real jobgate server process, an HTTP file server, DB URLs."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
PG_URL = os.environ.get("JOBGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")

requires_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap is not installed (make test installs it when run as root)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``jobgate serve`` in a subprocess, as a user would run it."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str | None] | None = None,
        log_level: str = "warning",
    ) -> None:
        """``env`` adds to (a value of None: removes from) the test defaults below."""
        self.data_dir = data_dir
        self.log_level = log_level
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        merged: dict[str, str | None] = {
            **os.environ,
            "JOBGATE_POLL_INTERVAL": "0.5",
            "JOBGATE_SLOTS": "4",
            # The tests' own HTTP/FTP/S3 servers listen on 127.0.0.1, which the SSRF guard
            # refuses by default; tests of the guard itself pass None to drop this.
            "JOBGATE_STAGING_ALLOWED_HOSTS": "127.0.0.1",
            "JOBGATE_STAGING_BACKOFF": "0.1",
            # Tests of other features run without authentication; tests/auth set their own.
            "JOBGATE_AUTH": "none",
            **(env or {}),
        }
        self.env = {k: v for k, v in merged.items() if v is not None}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self, timeout: float = 20) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobgate",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                self.log_level,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def allowed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the session's server allows for file:// inputs and outputs."""
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, allowed_dir: Path) -> Iterator[Server]:
    """One server for the session, default runtime (bwrap where installed)."""
    srv = Server(
        tmp_path_factory.mktemp("srv") / "data", {"JOBGATE_ALLOWED_DIRS": str(allowed_dir)}
    ).start()
    yield srv
    srv.stop()


@pytest.fixture()
def tes(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client on the server's TES base URL."""
    with httpx.Client(base_url=server.url + "/ga4gh/tes/v1", timeout=30) as client:
        yield client


def wait_final(client: httpx.Client, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll a task until it is in a terminal state; return its FULL view."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
        if task["state"] in TERMINAL:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} not final after {timeout}s: {task}")


def wait_state(
    client: httpx.Client, task_id: str, states: set[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
        if task["state"] in states:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {states}: {task}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path_factory.mktemp("httproot")

    def handler(*args: Any, **kwargs: Any) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def postgres_reachable() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False
