"""A live jobgate (service tokens, local backend, process runtime) for the DiracX tests,
and DiracX's own client, from its venv (``make diracx-venv``), configured against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.conftest import bearer, make_token
from tests.conftest import Server

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("JOBGATE_TEST_DIRACX_VENV", REPO / ".venv-diracx"))
FAR_FUTURE = 4_102_444_800  # 2100-01-01: the client never tries to refresh the token


@dataclass
class Dirac:
    """DiracX's client as one user runs it: ``dirac`` and Python, with their credentials."""

    server: Server
    home: Path
    token: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
            "HOME": str(self.home),
            "DIRACX_URL": self.server.url,
            "DIRACX_CREDENTIALS_PATH": str(self.home / "credentials.json"),
            "DIRACX_OUTPUT_FORMAT": "JSON",
        }

    def cli(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            [str(VENV / "bin" / "dirac"), *args],
            env=self.env,
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def python(self, code: str, cwd: Path | None = None) -> Any:
        """Run ``code`` (an async body using ``api``, an AsyncDiracClient) in the client's
        Python; it sets ``result``, printed as JSON and returned."""
        script = (
            "import asyncio, json, pathlib\n"
            "from diracx.client.aio import AsyncDiracClient\n"
            "from diracx.api.jobs import create_sandbox, download_sandbox\n"
            "async def main():\n"
            "    async with AsyncDiracClient() as api:\n"
            + "".join(f"        {line}\n" for line in code.strip().splitlines())
            + "        return result\n"
            "print(json.dumps(asyncio.run(main()), default=str))\n"
        )
        done = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", script],
            env=self.env,
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])


def _client(server: Server, home: Path, token: str) -> Dirac:
    home.mkdir(parents=True, exist_ok=True)
    creds = {"access_token": token, "refresh_token": "", "expires_on": FAR_FUTURE}
    (home / "credentials.json").write_text(json.dumps(creds))
    return Dirac(server, home, token)


@pytest.fixture(scope="module")
def dx_server() -> Iterator[Server]:
    # Executors of the process runtime reach their task directories as their own uid, so
    # the data directory lives where others may pass (pytest's own directories are 0700).
    parent = Path(tempfile.mkdtemp(prefix="jobgate-diracx-"))
    os.chmod(parent, 0o711)
    srv = Server(
        parent / "data",
        {"JOBGATE_AUTH": "token", "JOBGATE_RUNTIME": "process", "JOBGATE_POLL_INTERVAL": "0.2"},
    ).start()
    yield srv
    srv.stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def admin_token(dx_server: Server) -> str:
    return (dx_server.data_dir / "admin-token").read_text().strip()


@pytest.fixture(scope="module")
def users(
    dx_server: Server, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Dirac]:
    """DiracX clients of alice and bob (service tokens) and of the admin."""
    if not (VENV / "bin" / "dirac").exists():
        pytest.skip(f"no DiracX client venv at {VENV} (make diracx-venv)")
    root = tmp_path_factory.mktemp("dirac")
    return {
        "alice": _client(dx_server, root / "alice", make_token(dx_server, admin_token, "alice")),
        "bob": _client(dx_server, root / "bob", make_token(dx_server, admin_token, "bob")),
        "admin": _client(dx_server, root / "admin", admin_token),
    }


def http(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=bearer(token), timeout=30)
