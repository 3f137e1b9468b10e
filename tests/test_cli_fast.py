"""The quick ``jobgate`` commands print exactly what the typer app prints.

Each command line runs twice as a fresh process against a live server: through the
console entry point (:func:`jobgate.cli_fast.main`, which answers ``version``, ``status`` and
``ls`` itself) and through the typer app directly; exit code, stdout and stderr must match.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobgate.client import Client
from tests.conftest import Server, free_port

# What the console script does, and what it did before it had quick commands.
ENTRY_POINT = "import sys; sys.argv[0] = 'jobgate'; from jobgate.cli_fast import main; main()"
TYPER_APP = "import sys; sys.argv[0] = 'jobgate'; from jobgate.cli import app; app()"


@pytest.fixture(scope="module")
def job_id(server: Server) -> str:
    with Client(server.url) as jg:
        job = jg.submit({"name": "quick [cli] :fire:", "script": "exit 3"})
        return jg.wait(job.id, timeout=60).id


def both(args: list[str], env: dict[str, str]) -> tuple[tuple[int, str, str], ...]:
    runs = [
        subprocess.run(
            [sys.executable, *launcher, *args], env=env, capture_output=True, text=True, timeout=60
        )
        for launcher in (["-c", ENTRY_POINT], ["-c", TYPER_APP])
    ]
    return tuple((r.returncode, r.stdout, r.stderr) for r in runs)


@pytest.fixture()
def env(server: Server, tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("JOBGATE_")}
    return {
        **keep,
        "JOBGATE_URL": server.url,
        "JOBGATE_CONFIG": str(tmp_path / "config.toml"),
        "JOBGATE_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.mark.parametrize(
    "args",
    [
        ["version"],
        ["status", "{id}"],
        ["status", "{id}", "no-such-job"],
        ["status", "no-such-job"],
        ["ls"],
        ["ls", "-q"],
        ["ls", "--limit", "1"],
        ["--url", "{url}", "ls", "--quiet", "--limit=2"],
        ["--token", "some-token", "status", "{id}"],
        ["--url", "http://127.0.0.1:{free}", "ls"],
        ["--url", "ftp://example.org", "status", "{id}"],
        ["ls", "--limit", "0"],
    ],
)
def test_same_output_as_the_typer_app(
    args: list[str], job_id: str, server: Server, env: dict[str, str]
) -> None:
    argv = [a.format(id=job_id, url=server.url, free=free_port()) for a in args]
    fast, typer_app = both(argv, env)
    assert fast == typer_app
    if argv[-1] in ("ls", job_id) and "--url" not in argv:
        assert fast[0] == 0 and job_id in fast[1]
        assert "quick [cli] :fire:" in fast[1]  # the name as written: no markup, no emoji


def test_a_config_file_gives_the_url(job_id: str, server: Server, env: dict[str, str]) -> None:
    Path(env["JOBGATE_CONFIG"]).write_text(f'url = "{server.url}"\n')
    del env["JOBGATE_URL"]
    fast, typer_app = both(["status", job_id], env)
    assert fast == typer_app
    assert fast[0] == 0 and "EXECUTOR_ERROR" in fast[1]
