"""The batch node runner runs a bwrap or process task without pydantic, asyncio or psutil.

Every Slurm and Grid Engine job of jobgate starts ``python -m jobgate.runner.node`` on its
compute node; those imports alone cost several times the rest of its start-up, per job.
Each case writes ``node.json`` as the gateway does (``task_fields`` of a real job), runs
the runner in a fresh interpreter as the batch script does, and lists what it imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from jobgate.domain.models import Job, now
from jobgate.runner.nodetask import task_fields
from tests.conftest import requires_bwrap

HEAVY = ("pydantic", "pydantic_core", "asyncio", "psutil", "jobgate.domain", "jobgate.config")

RUN_AND_LIST = (
    "import json, runpy, sys\n"
    "sys.argv = ['node', sys.argv[1]]\n"
    "try:\n    runpy.run_module('jobgate.runner.node', run_name='__main__', alter_sys=True)\n"
    "except SystemExit as exc:\n    code = exc.code\n"
    "print(json.dumps({'exit': code, 'modules': sorted(sys.modules)}))\n"
)


def run_node(tmp_path: Path, runtime: str, executors: list[dict[str, object]]) -> dict[str, object]:
    job = Job.model_validate(
        {"id": str(uuid.uuid4()), "creation_time": now(), "executors": executors}
    )
    base = tmp_path / job.id
    (base / "root" / "tmp").mkdir(parents=True)
    node = {"task": task_fields(job), "runtime": runtime, "runtime_options": {}}
    (base / "node.json").write_text(json.dumps(node))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, str(base)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    listed = json.loads(out)
    result = json.loads((base / "result.json").read_text())
    return {**listed, "result": result}


def heavy_in(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.mark.parametrize(
    "runtime", ["process", pytest.param("bwrap", marks=requires_bwrap)], ids=str
)
def test_the_node_runner_runs_a_task_without_pydantic_or_asyncio(
    tmp_path: Path, runtime: str
) -> None:
    done = run_node(
        tmp_path,
        runtime,
        [
            {"image": "alpine", "command": ["sh", "-c", "echo hi; exit 3"], "ignore_error": True},
            {"image": "alpine", "command": ["sh", "-c", "echo $X"], "env": {"X": "y"}},
        ],
    )
    result = done["result"]
    assert isinstance(result, dict)
    assert result["state"] == "COMPLETE", result
    assert [e["stdout"] for e in result["executor_logs"]] == ["hi\n", "y\n"]
    assert [e["exit_code"] for e in result["executor_logs"]] == [3, 0]
    assert done["exit"] == 0
    assert heavy_in(done["modules"]) == []


def test_a_node_json_without_a_plain_task_runs_through_the_full_runner(tmp_path: Path) -> None:
    # Written by a gateway from before the plain task (jobs queued across an upgrade).
    job = {"id": "old", "creation_time": "2026-01-01T00:00:00Z"}
    job["executors"] = [{"image": "alpine", "command": ["sh", "-c", "echo old"]}]
    base = tmp_path / "old"
    (base / "root" / "tmp").mkdir(parents=True)
    (base / "node.json").write_text(json.dumps({"job": job, "runtime": "process"}))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src}
    subprocess.run(
        [sys.executable, "-m", "jobgate.runner.node", str(base)], env=env, check=True, timeout=60
    )
    result = json.loads((base / "result.json").read_text())
    assert result["state"] == "COMPLETE", result
    assert result["executor_logs"][0]["stdout"] == "old\n"


def test_sigterm_kills_the_running_executor_and_is_recorded(tmp_path: Path) -> None:
    job = Job.model_validate(
        {
            "id": "term",
            "creation_time": now(),
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "echo up; exec sleep 60"]},
                {"image": "alpine", "command": ["sh", "-c", "echo never"]},
            ],
        }
    )
    base = tmp_path / job.id
    (base / "root" / "tmp").mkdir(parents=True)
    node = {"task": task_fields(job), "runtime": "process", "runtime_options": {}}
    (base / "node.json").write_text(json.dumps(node))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-m", "jobgate.runner.node", str(base)], env=env)
    deadline = time.monotonic() + 30
    while not (base / "0.stdout").exists() or not (base / "0.stdout").read_text():
        assert time.monotonic() < deadline, "the executor never started"
        time.sleep(0.02)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 137  # the executor's own code: killed (128 + 9)
    assert time.monotonic() - t0 < 10
    result = json.loads((base / "result.json").read_text())
    assert result["state"] == "CANCELED" and result["signal"] == "SIGTERM"
    assert result["system_logs"] == ["the node runner received SIGTERM"]
    assert [e["stdout"] for e in result["executor_logs"]] == ["up\n"]
