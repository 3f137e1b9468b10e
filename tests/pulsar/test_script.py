"""The Pulsar backend's pure parts: the executors' script (run here with ``sh``, as Pulsar
runs it), its result file, the resource mapping and the state table."""

from __future__ import annotations

import subprocess
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobgate.backends.pulsar import script
from jobgate.backends.pulsar.backend import PulsarBackend, PulsarConfig, submit_params
from jobgate.backends.pulsar.states import STATE_MAP, mapped
from jobgate.domain.models import Job
from jobgate.domain.states import State


def job(**fields: Any) -> Job:
    return Job.model_validate(
        {"id": "j1", "creation_time": datetime.now(UTC), "executors": [], **fields}
    )


def ex(cmd: str, **extra: Any) -> dict[str, Any]:
    return {"image": "alpine", "command": ["sh", "-c", cmd], **extra}


def run_script(tmp_path: Path, j: Job) -> tuple[list[script.ExecutorResult], str | None]:
    (tmp_path / "root").mkdir()
    (tmp_path / script.SCRIPT).write_text(script.render(j, heartbeat=0.5))
    subprocess.run(["sh", script.SCRIPT], cwd=tmp_path, check=True, timeout=30)
    return script.parse_result((tmp_path / script.RESULT).read_text())


def test_the_script_runs_executors_in_order_and_stops_at_a_failure(tmp_path: Path) -> None:
    j = job(
        executors=[
            ex("exit 2", ignore_error=True),
            ex('printf "%s|%s" "$A" "${HOSTNAME-clean}"', env={"A": "it's $x"}),
            ex("pwd; exit 3", workdir="/w/d"),
            ex("echo never"),
        ],
        outputs=[{"path": "/w/d/missing", "url": "file:///x"}],
    )
    ran, end = run_script(tmp_path, j)
    assert end == "EXECUTOR_ERROR"
    assert [(r.index, r.exit_code) for r in ran] == [(0, 2), (1, 0), (2, 3)]
    assert (tmp_path / "1.stdout").read_text() == "it's $x|clean"  # env -i: no host env
    assert (tmp_path / "2.stdout").read_text() == f"{tmp_path}/root/w/d\n"
    with tarfile.open(tmp_path / script.OUT_TAR) as tar:
        names = set(tar.getnames())
    assert {script.RESULT, "0.stdout", "2.stderr"} <= names
    assert (tmp_path / script.ALIVE).read_text().strip()  # the heartbeat was written


def test_stdio_files_and_outputs_are_packed(tmp_path: Path) -> None:
    j = job(
        executors=[ex("tr a-z A-Z; echo e >&2", stdin="/in.txt", stdout="/o/up", stderr="/o/err")],
        outputs=[
            {"path": "/o/up", "url": "file:///x"},
            {"path": "/g/*.txt", "path_prefix": "/g", "url": "file:///y"},
        ],
    )
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "in.txt").write_text("abc\n")
    (tmp_path / script.SCRIPT).write_text(script.render(j, heartbeat=0.5))
    subprocess.run(["sh", script.SCRIPT], cwd=tmp_path, check=True, timeout=30)
    ran, end = script.parse_result((tmp_path / script.RESULT).read_text())
    assert end == "COMPLETE"
    assert (ran[0].stdout, ran[0].stderr) == ("root/o/up", "root/o/err")
    assert (tmp_path / "root/o/up").read_text() == "ABC\n"
    with tarfile.open(tmp_path / script.OUT_TAR) as tar:
        assert {"root/o/up", "root/o/err"} <= set(tar.getnames())
    assert script.output_roots(j) == ["/g", "/o/err", "/o/up"]


def test_a_half_written_result_is_not_final() -> None:
    ran, end = script.parse_result("0\t0\ta\tb\t0.stdout\t0.stderr\n1\t0\tx")
    assert [r.index for r in ran] == [0] and end is None


def test_resources_and_tags_become_submit_params() -> None:
    j = job(
        executors=[ex("true")],
        resources={
            "cpu_cores": 4,
            "ram_gb": 1.5,
            "disk_gb": 2,
            "preemptible": True,
            "backend_parameters": {"time": "600", "native_specification": "-p big"},
        },
        tags={"project": "x"},
    )
    params, notes = submit_params(j)
    assert params == {
        "ncpus": 4,
        "ram_mb": 1536,
        "disk_mb": 2048,
        "walltime": 600,
        "native_specification": "-p big",
        "tags": {"project": "x"},
    }
    assert any("preemptible" in n for n in notes)


def test_time_must_be_whole_seconds() -> None:
    config = PulsarConfig("http://127.0.0.1:1", None, "_default_", Path("/nonexistent"), 1024)
    check = PulsarBackend(config).check_parameters
    assert check({"time": "1:00"}) == {"time": "invalid value '1:00': expected whole seconds"}
    assert check({"time": "60"}) == {}


def test_every_pulsar_state_has_a_meaning() -> None:
    assert STATE_MAP["postprocessing"] == State.RUNNING
    assert STATE_MAP["lost"] == State.SYSTEM_ERROR
    assert mapped("something-new") == State.SYSTEM_ERROR


def test_a_cancel_pulsar_recorded_stops_the_script_before_or_while_it_runs(
    tmp_path: Path,
) -> None:
    # Pulsar's record of a cancel is `cancelled` in the job directory (the working
    # directory's parent); a kill that found no process yet leaves only that.
    before, during = tmp_path / "before" / "working", tmp_path / "during" / "working"
    for working in (before, during):
        (working / "root").mkdir(parents=True)
    j = job(executors=[ex("sleep 2; echo ran > ran")])
    (before.parent / "cancelled").write_text("true")
    (before / script.SCRIPT).write_text(script.render(j, heartbeat=0.5))
    proc = subprocess.run(["sh", script.SCRIPT], cwd=before, timeout=30)
    assert proc.returncode == 143 and not (before / "root" / "ran").exists()

    (during / script.SCRIPT).write_text(script.render(j, heartbeat=0.5))
    running = subprocess.Popen(["sh", script.SCRIPT], cwd=during)
    time.sleep(0.5)
    (during.parent / "cancelled").write_text("true")
    assert running.wait(timeout=30) == 143
    time.sleep(2.5)
    assert not (during / "root" / "ran").exists()
