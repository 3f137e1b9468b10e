"""Shared fixtures: a real jobgate server process, an HTTP file server, DB URLs.

The helpers the tests share are in :mod:`tests.support`; the few that tests have always
imported from here (``TERMINAL``, ``wait_final``, ``wait_state``, ``requires_bwrap``) are
re-exported. The session servers of the backends the contract suite runs on
(:mod:`tests.sites`) are loaded as plugins, so every test directory sees the same ones.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sites import SITES
from tests.support import (
    TERMINAL,
    api_client,
    requires_bwrap,
    serve_http,
    tes_client,
    wait_final,
    wait_state,
)

__all__ = [
    "PG_URL",
    "TERMINAL",
    "Server",
    "free_port",
    "requires_bwrap",
    "wait_final",
    "wait_state",
]

# Fixture modules of the contract suite's sites (plain modules, never a conftest.py: pytest
# scopes a conftest's fixtures to its directory, and refuses one loaded twice).
pytest_plugins = sorted({site.plugin for site in SITES if site.plugin})

PG_URL = os.environ.get("JOBGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


# Ports handed to servers that bind them later. Under pytest-xdist each worker draws from
# its own block below the kernel's ephemeral range, so that no other worker (nor an
# outgoing connection) takes a port between the check here and the server's bind.
_PORT_BLOCK = 2000
_PORT_BASE = 12000
# A random start: separate pytest runs on one machine (all worker gw0) rarely meet.
_next_port = random.randrange(_PORT_BLOCK)


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


def free_port() -> int:
    global _next_port
    first = _PORT_BASE + _PORT_BLOCK * (_worker_index() % 8)
    for _ in range(_PORT_BLOCK):
        port = first + _next_port % _PORT_BLOCK
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}..{first + _PORT_BLOCK - 1}")


# Tests that drive one machine-wide system (a scheduler's daemons, fixed ports and spool;
# the image tests' wheel build in the source tree) run in one xdist worker, one after
# another: `--dist loadgroup` keeps a group on one worker, which starts its system once.
_MACHINE_GROUPS = ("slurm", "gridengine", "image")


def _machine_group(item: pytest.Item) -> str | None:
    parts = Path(str(item.path)).relative_to(Path(__file__).parent).parts
    if parts and parts[0] in _MACHINE_GROUPS:
        return parts[0]
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec is not None else ():
        backend = getattr(value, "backend", None)
        if backend in _MACHINE_GROUPS:
            return str(backend)
    return None


# tryfirst: xdist's own hook turns the marks into the node-id suffix `loadgroup` reads,
# so the marks must be on the items before it runs.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = _machine_group(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


class Server:
    """``jobgate serve`` in a subprocess, as a user would run it."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str | None] | None = None,
        log_level: str = "warning",
        nofile: int | None = None,
    ) -> None:
        """``env`` adds to (a value of None: removes from) the test defaults below;
        ``nofile`` sets the server's open-files limit (soft and hard)."""
        self.data_dir = data_dir
        self.nofile = nofile
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

    def start(self, timeout: float = 60) -> Server:
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
            preexec_fn=self._limit if self.nofile else None,
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

    def _limit(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

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


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """An in-process app sets the service's umask (077) for the whole test process; files
    later tests make for other users (image roots, shared dirs) must not inherit it."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


@pytest.fixture()
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """For client and CLI tests: no server URL or credentials from the caller's shell, nor
    the admin token a local ``make run`` left in the default data directory. Returns the
    path of the test's own (not yet written) config file."""
    for var in ("JOBGATE_URL", "JOBGATE_TOKEN", "JOBGATE_USER", "JOBGATE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "config.toml"
    monkeypatch.setenv("JOBGATE_CONFIG", str(path))
    monkeypatch.setenv("JOBGATE_DATA_DIR", str(tmp_path / "data"))
    return path


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


@pytest.fixture(scope="session")
def process_server(allowed_dir: Path) -> Iterator[Server]:
    """One server for the session on the process runtime (plain, not isolated processes)."""
    # pytest's own directories are 0700; executors of the process runtime reach their task
    # directories by host path as their own uid, so the data dir lives where others may pass.
    parent = Path(tempfile.mkdtemp(prefix="jobgate-process-"))
    os.chmod(parent, 0o711)
    srv = Server(
        parent / "data", {"JOBGATE_RUNTIME": "process", "JOBGATE_ALLOWED_DIRS": str(allowed_dir)}
    ).start()
    yield srv
    srv.stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture()
def tes(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client on the server's TES base URL."""
    with tes_client(server) as client:
        yield client


@pytest.fixture()
def api(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client on the server's native API (``/api/v1``)."""
    with api_client(server) as client:
        yield client


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path_factory.mktemp("httproot")
    with serve_http(functools.partial(_QuietHandler, directory=str(root))) as base:
        yield base, root


def postgres_reachable() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False
