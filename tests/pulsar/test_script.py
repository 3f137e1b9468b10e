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
from jobgate.backends.pulsar.backend import PulsarBackend, PulsarConfig, held, submit_params
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
    assert STATE_MAP == {
        "preprocessing": State.INITIALIZING,  # Pulsar fetches the inputs itself
        "queued": State.QUEUED,
        "running": State.RUNNING,
        "postprocessing": State.RUNNING,
        "complete": State.COMPLETE,  # or EXECUTOR_ERROR, by the executors' exit codes
        "failed": State.SYSTEM_ERROR,
        "lost": State.SYSTEM_ERROR,
        "cancelled": State.CANCELED,
    }
    assert mapped("something-new") == State.SYSTEM_ERROR


def test_a_preprocessing_job_is_held_only_once_the_gateway_knows_it_submitted_it() -> None:
    # Set up and never submitted (the gateway died in between) looks like staging.
    assert not held({"status": "preprocessing"})
    assert held({"status": "preprocessing"}, submitted=True)
    assert held({"status": "queued"}) and held({"status": "complete"})
    assert not held({"status": "lost"}, submitted=True)


def test_inputs_pulsar_fetched_are_moved_into_the_task_before_the_executors(
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "jobgate-fetch-0").write_text("remote\n")
    j = job(executors=[ex('cat "$JOBGATE_TASK_ROOT/d/e/in.txt"')])
    (tmp_path / "root").mkdir()
    body = script.render(
        j, heartbeat=0.5, fetched=[("jobgate-fetch-0", "/d/e/in.txt")], inputs_dir=str(inputs)
    )
    (tmp_path / script.SCRIPT).write_text(body)
    subprocess.run(["sh", script.SCRIPT], cwd=tmp_path, check=True, timeout=30)
    _, end = script.parse_result((tmp_path / script.RESULT).read_text())
    assert end == "COMPLETE" and (tmp_path / "0.stdout").read_text() == "remote\n"

    # One that is not there (Pulsar said it fetched it): the script does not run on.
    (tmp_path / script.RESULT).unlink()
    subprocess.run(["sh", script.SCRIPT], cwd=tmp_path, timeout=30)
    assert script.parse_result((tmp_path / script.RESULT).read_text()) == ([], None)


def recording_runtime(path: Path) -> Path:
    """A stand-in container runtime: writes its argv, one word a line, next to itself."""
    path.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {path}.argv\n')
    path.chmod(0o755)
    return path


def test_with_a_container_runtime_the_script_runs_each_image_with_the_task_paths_bound(
    tmp_path: Path,
) -> None:
    j = job(
        executors=[
            ex("echo $A", env={"A": "it's"}, workdir="/w"),
            ex("true", image="docker://alpine:3", stdout="/o/out"),
        ],
        inputs=[{"path": "/etc/app.conf", "content": "x"}],
        outputs=[{"path": "/results/r.txt", "url": "file:///x"}],
        volumes=["/scratch"],
    )
    for kind in ("docker", "singularity"):
        base = tmp_path / kind
        (base / "root" / "etc").mkdir(parents=True)
        (base / "root" / "etc" / "app.conf").write_text("x")
        runtime = recording_runtime(tmp_path / f"{kind}-cmd")
        container = script.Container(kind, str(runtime))  # type: ignore[arg-type]
        (base / script.SCRIPT).write_text(script.render(j, 0.5, container=container))
        subprocess.run(["sh", script.SCRIPT], cwd=base, check=True, timeout=30)
        argv = Path(f"{runtime}.argv").read_text().splitlines()  # the last executor's
        root = f"{base}/root"
        flag = "-v" if kind == "docker" else "-B"
        binds = [argv[i + 1] for i, a in enumerate(argv) if a == flag]
        # Each path the task names, not its parent: the image's /etc stays.
        assert sorted(binds) == sorted(
            f"{root}{p}:{p}" if p != "/tmp" else f"{root}/tmp:/tmp"
            for p in ("/tmp", "/etc/app.conf", "/o", "/results", "/scratch", "/w")
        ), argv
        for p in ("/o", "/results", "/scratch", "/w"):
            assert (base / "root" / p.lstrip("/")).is_dir()  # made before the bind
        if kind == "docker":
            assert argv[:3] == ["run", "--rm", "-i"]
            assert argv[-4:] == ["alpine:3", "sh", "-c", "true"]
            # Named, so that a cancel (which kills the client) can stop the container.
            assert argv[argv.index("--name") + 1].startswith("jobgate-")
        else:
            assert argv[:3] == ["exec", "--containall", "--cleanenv"]
            assert argv[-4:] == ["docker://alpine:3", "sh", "-c", "true"]
        assert "JOBGATE_TASK_ROOT=" in argv and "HOME=/tmp" in argv
        rendered = script.render(j, 0.5, container=container)
        want = "-e 'A=it'\"'\"'s'" if kind == "docker" else "--env 'A=it'\"'\"'s'"
        assert want in rendered
        assert ("-w /w " if kind == "docker" else "--pwd /w ") in rendered


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
