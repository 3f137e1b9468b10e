"""A backend kind from a site's own distribution, found through the ``jobgate.backends``
entry point by a real server: declared in a config file, routed to, listed, and run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from jobgate.domain.lifecycle import PARAMETER_KEYS
from tests.conftest import Server, wait_final

ECHO_KIND = '''
"""An outside backend kind: each executor "runs" by echoing its command."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobgate.backends.base import Backend, BackendStatus, SubmitError
from jobgate.backends.registry import BackendKind
from jobgate.domain.models import ExecutorLog
from jobgate.domain.states import State


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["echo"]
    greeting: str = Field(default="echo", description="Printed before each command.")


class EchoBackend(Backend):
    parameter_keys = frozenset({"echo_suffix"})

    def __init__(self, name: str, greeting: str) -> None:
        super().__init__()
        self.name = name
        self.greeting = greeting
        self.jobs: dict[str, list[ExecutorLog]] = {}

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        value = params.get("echo_suffix")
        if value is not None and not re.fullmatch("[a-z0-9]+", value):
            return {"echo_suffix": "letters and digits only"}
        return {}

    async def submit(self, job: Any, ctx: Any) -> str:
        params = job.resources.backend_parameters if job.resources else None
        suffix = (params or {}).get("echo_suffix", "")
        if suffix == "busy":
            raise SubmitError("echo is busy", transient=True)
        self.jobs[job.id] = [
            ExecutorLog(stdout=f"{self.greeting}{suffix}: {' '.join(e.command)}\\n", exit_code=0)
            for e in job.executors
        ]
        self.changed.set()
        return f"echo-{job.id}"

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        return {
            nid: BackendStatus(state=State.COMPLETE, executor_logs=self.jobs[nid[5:]])
            for nid in native_ids
            if nid[5:] in self.jobs
        }

    async def cancel(self, native_id: str) -> None:
        pass

    async def known_ids(self) -> list[str]:
        return [f"echo-{j}" for j in self.jobs]

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "greeting": self.greeting}


KIND = BackendKind(
    name="echo",
    config=EchoOptions,
    build=lambda name, options, ctx: EchoBackend(name, options.greeting),
    summary="echoes commands",
)
'''

ENTRY_POINTS = """\
[jobgate.backends]
echo = jg_echo_kind:KIND
broken = jg_echo_kind.broken:KIND
"""

CONFIG = """\
default_backend: local
backends:
  local: {type: local, slots: 1}
  shouty: {type: echo, greeting: HELLO}
"""

# What py-tes expects of /service-info: no other keys.
TES_SERVICE_INFO_KEYS = {
    "id",
    "name",
    "type",
    "description",
    "organization",
    "version",
    "storage",
    "tesResources_backend_parameters",
}


@pytest.fixture(scope="module")
def site_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution ``jg-echo-kind`` as pip would leave it: a package and its
    ``.dist-info`` with the entry points (one kind that works, one that cannot import)."""
    root = tmp_path_factory.mktemp("site")
    pkg = root / "jg_echo_kind"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(ECHO_KIND)
    (pkg / "broken.py").write_text("import jg_missing_dependency_xyz  # noqa\n")
    info = root / "jg_echo_kind-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jg-echo-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def env_with(site: Path) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{site}{os.pathsep}{path}" if path else str(site)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, site_packages: Path) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("outside")
    cfg = base / "backends.yaml"
    cfg.write_text(CONFIG)
    env = {
        **env_with(site_packages),
        "JOBGATE_CONFIG_FILE": str(cfg),
        # Applies to every backend: the outside kind sets no patience of its own.
        "JOBGATE_SUBMIT_PATIENCE": "2",
    }
    srv = Server(base / "data", env).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_task_routed_to_the_outside_kind_completes_through_it(server: Server) -> None:
    task = {
        "executors": [{"image": "x", "command": ["echo", "hi"]}],
        "resources": {"backend_parameters": {"backend": "shouty", "echo_suffix": "x1"}},
    }
    with httpx.Client(base_url=server.url + "/ga4gh/tes/v1", timeout=30) as c:
        r = c.post("/tasks", json=task)
        assert r.status_code == 200, r.text
        done = wait_final(c, r.json()["id"])
        assert done["state"] == "COMPLETE", done
        meta = done["logs"][0]["metadata"]
        assert (meta["backend"], meta["greeting"]) == ("shouty", "HELLO")
        assert done["logs"][0]["logs"][0]["stdout"] == "HELLOx1: echo hi\n"
        # The kind checks its own parameters: a bad value is the client's error.
        bad = {
            **task,
            "resources": {"backend_parameters": {"backend": "shouty", "echo_suffix": "a b"}},
        }
        r = c.post("/tasks", json=bad)
        assert r.status_code == 400, r.text
        assert any("echo_suffix" in e["where"] for e in r.json()["errors"]), r.json()
        # The default backend is still the local one, which still runs tasks.
        r = c.post("/tasks", json={"executors": [{"image": "x", "command": ["true"]}]})
        done = wait_final(c, r.json()["id"])
        assert (done["state"], done["logs"][0]["metadata"]["backend"]) == ("COMPLETE", "local")


def test_transient_refusals_of_the_outside_kind_wait_out_the_gateways_patience(
    server: Server,
) -> None:
    task = {
        "executors": [{"image": "x", "command": ["true"]}],
        "resources": {"backend_parameters": {"backend": "shouty", "echo_suffix": "busy"}},
    }
    with httpx.Client(base_url=server.url + "/ga4gh/tes/v1", timeout=30) as c:
        task_id = c.post("/tasks", json=task).json()["id"]
        done = wait_final(c, task_id, timeout=30)
        events = httpx.get(f"{server.url}/api/v1/jobs/{task_id}/events", timeout=30).json()
    assert done["state"] == "SYSTEM_ERROR", done
    details = [e.get("detail") or "" for e in events["events"]]
    assert any("waiting for backend shouty: echo is busy" in d for d in details), details
    assert any("for up to 2s" in d for d in details), details


def test_the_backends_endpoint_lists_backends_kinds_and_the_broken_one(server: Server) -> None:
    info = httpx.get(server.url + "/api/v1/backends", timeout=30).json()
    assert info["default_backend"] == "local"
    backends = {b["name"]: b for b in info["backends"]}
    assert list(backends) == ["local", "shouty"]
    shouty = backends["shouty"]
    assert (shouty["kind"], shouty["default"]) == ("echo", False)
    assert shouty["backend_parameters"] == ["backend", "echo_suffix"]
    assert shouty["facts"]["greeting"] == "HELLO"
    assert (backends["local"]["kind"], backends["local"]["default"]) == ("local", True)
    assert backends["local"]["backend_parameters"] == ["backend"]
    kinds = {k["kind"]: k for k in info["kinds"]}
    assert {"local", "slurm", "echo", "broken"} <= set(kinds)
    assert kinds["echo"]["available"] and kinds["echo"]["options"][0]["name"] == "greeting"
    assert kinds["broken"]["available"] is False
    assert "jg_missing_dependency_xyz" in kinds["broken"]["error"]
    assert "backend kind 'broken' is unavailable" in server.log_path.read_text()


def test_tes_service_info_keeps_its_shape_and_lists_every_parameter(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        info = c.get("/ga4gh/tes/v1/service-info").json()
        assert set(info) == TES_SERVICE_INFO_KEYS
        # The outside kind's own parameter beside those every backend takes.
        expected = sorted({"backend", "echo_suffix", *PARAMETER_KEYS})
        assert info["tesResources_backend_parameters"] == expected
        assert set(c.get("/v1/tasks/service-info").json()) == {"name", "doc", "storage"}
    parsed = tes.HTTPClient(server.url).get_service_info()  # py-tes refuses unknown keys
    assert parsed.tes_resources_backend_parameters == expected


def serve_fails(tmp_path: Path, site: Path, config: str) -> str:
    cfg = tmp_path / "backends.yaml"
    cfg.write_text(config)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobgate",
            "serve",
            "--config",
            str(cfg),
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env_with(site), "JOBGATE_AUTH": "none"},
    )
    assert res.returncode == 2, res
    return res.stderr


def test_a_config_file_using_the_broken_kind_fails_naming_it_and_why(
    tmp_path: Path, site_packages: Path
) -> None:
    stderr = serve_fails(tmp_path, site_packages, "backends: {b: {type: broken}}\n")
    assert "backends.b.type: backend kind 'broken' is unavailable" in stderr
    assert "No module named 'jg_missing_dependency_xyz'" in stderr


def test_a_bad_option_of_the_outside_kind_names_the_backend_and_field(
    tmp_path: Path, site_packages: Path
) -> None:
    stderr = serve_fails(tmp_path, site_packages, "backends: {e: {type: echo, greting: x}}\n")
    assert "backends.e.greting: Extra inputs are not permitted (backend 'e', type echo)" in stderr


def test_jobgate_backends_lists_the_outside_kinds(site_packages: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "jobgate", "backends"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env_with(site_packages), "COLUMNS": "200"},
    )
    assert res.returncode == 0, res
    text = res.stdout
    assert "echo  echoes commands" in text and "greeting: str (default echo)" in text
    assert "broken  unavailable: ModuleNotFoundError" in text
    assert "shared_dir: Path (required)" in text
