"""Old and new py-tes against both prefixes: ``/v1`` speaks TES 1.0 (py-tes 0.4.2, the
client of Toil and Snakemake's TES plugin), ``/ga4gh/tes/v1`` TES 1.1 (py-tes 1.1).

py-tes 0.4.2 conflicts with the suite's py-tes 1.1, so it runs in its own venv
(:mod:`tests.engines.venvs`) through :mod:`tests.engines.pytes0_probe`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import tes

from jobgate.api import tes1
from jobgate.domain.states import State
from tests.conftest import Server
from tests.engines import venvs
from tests.support import pytes_run, pytes_sh, requires_bwrap, uid

PROBE = Path(__file__).with_name("pytes0_probe.py")
TES_1_0_STATES = {
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
}  # py-tes 0.4.2's set: TES 1.0's without PAUSED


@pytest.fixture(scope="module")
def pytes0() -> Path:
    return venvs.build("pytes0", venvs.PYTES_0) / "bin" / "python"


def probe(python: Path, base: str, action: str, stdin: Any = None) -> Any:
    done = subprocess.run(
        [str(python), str(PROBE), base, action],
        input=None if stdin is None else json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@requires_bwrap
def test_pytes0_on_v1_parses_every_answer(pytes0: Path, server: Server, allowed_dir: Path) -> None:
    out = probe(pytes0, server.url, "calls")
    info = out["service_info"]
    assert set(info) == {"name", "doc", "storage"}
    assert allowed_dir.resolve().as_uri() in info["storage"]
    full = out["task"]["FULL"]
    assert full["state"] == "COMPLETE"
    assert full["logs"][0]["logs"][0]["stdout"] == "hello\n"
    assert out["task"]["MINIMAL"] == {"id": full["id"], "state": "COMPLETE"}
    assert "stdout" not in out["task"]["BASIC"]["logs"][0]["logs"][0]
    assert all(full["id"] in ids for ids in out["listed"].values())


@requires_bwrap
def test_pytes0_polling_a_cancel_never_raises(pytes0: Path, server: Server) -> None:
    out = probe(pytes0, server.url, "cancel")
    assert out["states"][0] == "RUNNING" and out["states"][-1] == "CANCELED"
    assert set(out["states"]) <= {"RUNNING", "CANCELED"}
    r = requests.get(f"{server.url}/ga4gh/tes/v1/tasks/{out['id']}", timeout=30)
    assert r.json()["state"] == "CANCELED"


@requires_bwrap
def test_pytes0_on_the_1_1_prefix_parses_its_own_tasks(pytes0: Path, server: Server) -> None:
    # A 1.0 client pointed at /ga4gh/tes: tasks it sent come back with its own fields only;
    # service-info exists there only in the 1.1 form, at /ga4gh/tes/v1/service-info.
    out = probe(pytes0, server.url + "/ga4gh/tes", "calls")
    assert "service_info" not in out
    assert out["task"]["FULL"]["logs"][0]["logs"][0]["stdout"] == "hello\n"


def test_every_state_and_1_1_field_parses_in_pytes0(pytes0: Path) -> None:
    """Each stored state, and a task carrying every 1.1-only field, as /v1 renders them."""
    full = {
        "id": "t1",
        "name": "n",
        "inputs": [{"path": "/in", "url": "file:///x", "type": "FILE", "streamable": True}],
        "outputs": [{"path": "/o", "url": "file:///o", "path_prefix": "/o", "type": "FILE"}],
        "resources": {"cpu_cores": 1, "backend_parameters": {"k": "v"}},
        "executors": [{"image": "a", "command": ["true"], "ignore_error": True}],
        "logs": [
            {
                "logs": [{"exit_code": 0, "start_time": "2024-01-01T00:00:00Z"}],
                "outputs": [{"url": "file:///o", "path": "/o", "size_bytes": "3"}],
                "system_logs": ["x"],
                "metadata": {"runtime": "bwrap"},
            }
        ],
        "creation_time": "2024-01-01T00:00:00Z",
    }
    docs = [tes1.task({**full, "state": s.value}) for s in State]
    parsed = probe(pytes0, "-", "unmarshal", docs)
    shown = {s.value: p["state"] for s, p in zip(State, parsed, strict=True)}
    assert set(shown.values()) <= TES_1_0_STATES
    assert shown["CANCELING"] == "RUNNING"  # still active: never shown as ended early
    assert shown["PAUSED"] == "QUEUED"
    assert shown["PREEMPTED"] == "SYSTEM_ERROR"
    assert parsed[0]["executors"] == [{"image": "a", "command": ["true"]}]


@requires_bwrap
@pytest.mark.parametrize("prefix", ["/ga4gh/tes/v1", "/v1"])
def test_pytes1_parses_both_prefixes(server: Server, prefix: str) -> None:
    client = tes.HTTPClient(server.url, timeout=30)
    task = pytes_run(
        client,
        tes.Task(
            name=f"both-{uid()}",
            executors=[pytes_sh("echo hi", ignore_error=True)],
            resources=tes.Resources(backend_parameters={"backend": "local"}),
        ),
    )
    for view in ("MINIMAL", "BASIC", "FULL"):
        r = requests.get(f"{server.url}{prefix}/tasks/{task.id}", params={"view": view}, timeout=30)
        parsed = tes.utils.unmarshal(r.json(), tes.Task)
        assert parsed.state == "COMPLETE"
    listed = requests.get(f"{server.url}{prefix}/tasks", params={"view": "FULL"}, timeout=30)
    assert tes.utils.unmarshal(listed.json(), tes.models.ListTasksResponse).tasks
    info = requests.get(f"{server.url}{prefix}/service-info", timeout=30).json()
    assert tes.utils.unmarshal(info, tes.models.ServiceInfo).type["artifact"] == "tes"
    executor = requests.get(
        f"{server.url}{prefix}/tasks/{task.id}", params={"view": "FULL"}, timeout=30
    ).json()["executors"][0]
    # 1.1 fields stay on the 1.1 prefix only.
    assert ("ignore_error" in executor) == (prefix == "/ga4gh/tes/v1")
