"""Client commands never import the server stack (what makes them start quickly).

Each command runs in a fresh interpreter, against an address where nothing listens (the
command fails to connect, which is fine here); the modules it imported are then listed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import free_port

SERVER_STACK = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "prometheus_client",
    "jobgate.api",
    "jobgate.service",
    "jobgate.store",
    "jobgate.dispatcher",
    "jobgate.backends",
)


def modules_after(*args: str) -> set[str]:
    code = (
        "import json, runpy, sys\n"
        f"sys.argv = ['jobgate', *{list(args)!r}]\n"
        "try:\n    runpy.run_module('jobgate', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"JOBGATE_URL": f"http://127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [("version",), ("--help",), ("status", "some-id"), ("ls",), ("ls", "--state", "RUNNING")],
)
def test_client_commands_do_not_import_the_server(args: tuple[str, ...]) -> None:
    loaded = modules_after(*args)
    assert "jobgate.cli_fast" in loaded
    assert sorted(m for m in loaded if m.startswith(SERVER_STACK)) == []


QUICK_COMMANDS = [
    ("version",),
    ("status", "some-id"),
    ("status", "one", "two"),
    ("ls",),
    ("ls", "-q", "--limit", "5"),
    ("--url", "http://127.0.0.1:1", "--token", "t", "ls"),
]
# What only the typer app and the full client need: the quick commands do without them.
NOT_QUICK = (
    "typer",
    "click",
    "httpx",
    "httpcore",
    "pydantic",
    "pydantic_core",
    "yaml",
    "jobgate.cli",
    "jobgate.client.sync",
    "jobgate.client.aio",
    "jobgate.client.calls",
    "jobgate.client.models",
    "jobgate.domain",
    "jobgate.config",
)


@pytest.mark.parametrize("args", QUICK_COMMANDS)
def test_quick_commands_load_neither_typer_nor_httpx_nor_pydantic(args: tuple[str, ...]) -> None:
    loaded = modules_after(*args)
    assert sorted(m for m in loaded if in_package(m)) == []


def in_package(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in NOT_QUICK)


def test_version_imports_neither_the_client_nor_rich() -> None:
    loaded = modules_after("version")
    assert not {"jobgate.client", "jobgate.cli_support", "rich", "http.client"} & loaded


@pytest.mark.parametrize("args", [("--help",), ("ls", "--state", "RUNNING"), ("--json", "ls")])
def test_other_command_lines_go_to_the_typer_app(args: tuple[str, ...]) -> None:
    assert "jobgate.cli" in modules_after(*args)


def test_the_check_sees_the_server_when_serve_loads_it() -> None:
    # ``serve --help`` parses its options only; importing the app is what ``serve`` does.
    loaded = modules_after("backends")
    assert any(m.startswith("jobgate.backends") for m in loaded)
