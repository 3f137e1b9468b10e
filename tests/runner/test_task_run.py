"""Running executors through each runtime with real processes (no server involved)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest

from jobgate.domain.models import Job, now
from jobgate.domain.states import State
from jobgate.runner.executors import TaskRun
from jobgate.runner.taskdir import PathEscape, TaskDir
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.bwrap import ETC_ENTRIES, BwrapRuntime
from jobgate.runtimes.cgroups import LOST_START, CgroupLayout, ResourceGroup
from jobgate.runtimes.process import ProcessRuntime
from tests.conftest import requires_bwrap


def _job(*commands: list[str], **extra: object) -> Job:
    return Job.model_validate(
        {
            "id": str(uuid.uuid4()),
            "creation_time": now(),
            "executors": [{"image": "alpine", "command": c} for c in commands],
            **extra,
        }
    )


async def _run(job: Job, runtime: Runtime, tmp_path: Path) -> tuple[TaskRun, TaskDir]:
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    run = TaskRun(job, td, runtime, CgroupLayout.detect(), log_tail_bytes=4096)
    await run.run()
    return run, td


def _runtimes() -> list[object]:
    return [
        pytest.param(ProcessRuntime(), id="process"),
        pytest.param("bwrap", id="bwrap", marks=requires_bwrap),
    ]


def _rt(value: object) -> Runtime:
    return BwrapRuntime() if value == "bwrap" else value  # type: ignore[return-value]


@pytest.mark.parametrize("runtime", _runtimes())
async def test_executors_run_in_order_and_stop_at_first_failure(
    runtime: object, tmp_path: Path
) -> None:
    job = _job(["sh", "-c", "echo one"], ["sh", "-c", "echo two >&2; exit 3"], ["echo", "three"])
    run, _ = await _run(job, _rt(runtime), tmp_path)
    logs = run.result.executor_logs
    assert run.result.state == State.EXECUTOR_ERROR
    assert [(e.stdout, e.stderr, e.exit_code) for e in logs] == [
        ("one\n", "", 0),
        ("", "two\n", 3),
    ]


@pytest.mark.parametrize("runtime", _runtimes())
async def test_signal_death_reports_128_plus_signal(runtime: object, tmp_path: Path) -> None:
    run, _ = await _run(_job(["sh", "-c", "kill -9 $$"]), _rt(runtime), tmp_path)
    assert run.result.executor_logs[0].exit_code == 137


@pytest.mark.parametrize("runtime", _runtimes())
async def test_environment_is_only_what_the_task_sets(
    runtime: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBGATE_TEST_SECRET", "s3cr3t")
    job = Job.model_validate(
        {
            "id": str(uuid.uuid4()),
            "creation_time": now(),
            "executors": [{"image": "a", "command": ["env"], "env": {"GREETING": "hi"}}],
        }
    )
    run, _ = await _run(job, _rt(runtime), tmp_path)
    out = run.result.executor_logs[0].stdout or ""
    assert "GREETING=hi" in out
    assert "s3cr3t" not in out


async def test_process_runtime_runs_in_the_task_root_with_relative_paths(tmp_path: Path) -> None:
    job = _job(["sh", "-c", "cat in.txt > out.txt; pwd"], workdir=None)
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    (td.root / "in.txt").write_text("data")
    run = TaskRun(job, td, ProcessRuntime(), CgroupLayout.detect(), log_tail_bytes=4096)
    await run.run()
    assert (td.root / "out.txt").read_text() == "data"
    assert (run.result.executor_logs[0].stdout or "").strip() == str(td.root)


@requires_bwrap
async def test_bwrap_hides_the_host_and_the_network(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host only")
    script = (
        f"cat {secret} 2>/dev/null && echo LEAK; "
        "touch /usr/x 2>/dev/null && echo WROTE_USR; "
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; "
        "test -e /etc/shadow && echo SHADOW; "
        "echo uid=$(id -u); "
        "echo pid=$$"
    )
    run, _ = await _run(_job(["sh", "-c", script]), BwrapRuntime(), tmp_path)
    out = run.result.executor_logs[0].stdout or ""
    assert "LEAK" not in out and "WROTE_USR" not in out and "SHADOW" not in out
    assert "uid=0" not in out  # never root inside, even when the service runs as root
    assert [line for line in out.splitlines() if "=" not in line] == ["lo"]
    assert "pid=1" in out or "pid=2" in out  # a private PID namespace


@pytest.mark.parametrize("runtime", _runtimes())
async def test_cancel_kills_the_whole_tree(runtime: object, tmp_path: Path) -> None:
    marker = f"{uuid.uuid4().int % 1000 + 1000}.25"
    job = _job(["sh", "-c", f"setsid sleep {marker} & sleep {marker}; wait"])
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    run = TaskRun(job, td, _rt(runtime), CgroupLayout.detect(), log_tail_bytes=4096)
    task = asyncio.create_task(run.run())

    def sleepers() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline"]):
            if p.info["cmdline"] == ["sleep", marker]:
                found.append(p)
        return found

    for _ in range(100):
        if len(sleepers()) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(sleepers()) == 2
    run.cancel()
    result = await asyncio.wait_for(task, 10)
    assert result.state == State.CANCELED
    for _ in range(40):
        if not [p for p in sleepers() if p.status() != psutil.STATUS_ZOMBIE]:
            break
        await asyncio.sleep(0.05)
    assert [p for p in sleepers() if p.status() != psutil.STATUS_ZOMBIE] == []


def test_task_paths_cannot_escape_the_root(tmp_path: Path) -> None:
    job = _job(["true"])
    td = TaskDir(tmp_path / "t")
    td.prepare(job)
    os.symlink("/etc", td.root / "link")
    with pytest.raises(PathEscape):
        td.host("/link/passwd")
    assert td.host("/data/x") == (td.root / "data" / "x").resolve()


def _alive(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.info["cmdline"] == ["sleep", marker] and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def _groups_left(layout: CgroupLayout) -> list[Path]:
    return [d for base in layout.bases.values() for d in base.iterdir() if d.is_dir()]


@pytest.mark.parametrize("runtime", _runtimes())
@pytest.mark.parametrize("how", ["cancel", "task.cancel"])
@pytest.mark.parametrize("delay", [0, 0.001, 0.004, 0.02, 0.1])
async def test_a_cancel_at_any_moment_leaves_nothing_behind(
    runtime: object, how: str, delay: float, tmp_path: Path
) -> None:
    marker = f"{uuid.uuid4().int % 1000 + 2000}.5"
    job = _job(["sh", "-c", f"setsid sleep {marker} & sleep {marker}; wait"])
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    layout = CgroupLayout.detect(f"jgtest-{uuid.uuid4().hex[:8]}")
    try:
        run = TaskRun(job, td, _rt(runtime), layout, log_tail_bytes=4096)
        task = asyncio.create_task(run.run())
        await asyncio.sleep(delay)
        if how == "cancel":
            run.cancel()
            assert (await asyncio.wait_for(task, 10)).state == State.CANCELED
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert run.result.state == State.CANCELED
        # Killed and reaped before run() returned; only orphans may need a moment to go.
        for _ in range(40):
            if not _alive(marker):
                break
            await asyncio.sleep(0.05)
        assert _alive(marker) == []
        assert _groups_left(layout) == []
    finally:
        layout.close()


@pytest.mark.parametrize("runtime", _runtimes())
async def test_log_tails_never_follow_a_swapped_in_symlink(runtime: object, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host only")
    swap = f"echo mine; rm out.txt; ln -s {secret} out.txt"
    job = Job.model_validate(
        {
            "id": str(uuid.uuid4()),
            "creation_time": now(),
            "executors": [
                {
                    "image": "a",
                    "command": ["sh", "-c", swap],
                    "workdir": "/data",
                    "stdout": "/data/out.txt",
                }
            ],
        }
    )
    run, _ = await _run(job, _rt(runtime), tmp_path)
    assert run.result.executor_logs[0].stdout == "mine\n"


async def test_memory_limit_kill_is_reported(tmp_path: Path) -> None:
    layout = CgroupLayout.detect(f"jgtest-{uuid.uuid4().hex[:8]}")
    try:
        if layout.version == 0:
            pytest.skip("cgroups are not writable here")
        script = "x = b'a' * (200 * 1024 * 1024)"
        job = _job(["python3", "-c", script], resources={"ram_gb": 0.05})
        td = TaskDir(tmp_path / job.id)
        td.prepare(job)
        run = TaskRun(job, td, ProcessRuntime(), layout, log_tail_bytes=4096)
        await run.run()
        assert run.result.state == State.EXECUTOR_ERROR
        assert run.result.executor_logs[0].exit_code == 137
        assert "OOM" in " ".join(run.result.system_logs)
        assert _groups_left(layout) == []
    finally:
        layout.close()


@requires_bwrap
async def test_bwrap_etc_is_one_readonly_copy_of_harmless_entries(tmp_path: Path) -> None:
    etc = tmp_path / "sandbox-etc"
    etc.mkdir()
    (etc / "stale").write_text("from an earlier start")
    runtime = BwrapRuntime(etc_dir=etc)
    assert not (etc / "stale").exists()  # rebuilt at every start
    script = (
        "ls -A /etc; "
        "test -e /etc/shadow && echo SHADOW; "
        "test -e /etc/ssl/private && echo PRIVATE; "
        "touch /etc/x 2>/dev/null && echo WROTE_ETC; "
        "grep -q '^root:' /etc/passwd && echo PASSWD_OK"
    )
    run, _ = await _run(_job(["sh", "-c", script]), runtime, tmp_path)
    out = (run.result.executor_logs[0].stdout or "").split()
    assert "PASSWD_OK" in out
    assert not {"SHADOW", "PRIVATE", "WROTE_ETC"} & set(out)
    assert set(out) - {"PASSWD_OK"} <= set(ETC_ENTRIES)


def test_removal_takes_whatever_the_task_left(tmp_path: Path) -> None:
    job = _job(["true"], volumes=["/data"])
    td = TaskDir(tmp_path / "t")
    td.prepare(job)
    td.log_file(0, "stdout").write_text("x")
    (td.root / "tmp" / "deep" / "er").mkdir(parents=True)
    os.symlink("/etc", td.root / "data" / "link")
    td.remove()
    assert not td.base.exists()
    assert os.path.exists("/etc/passwd")  # a symlink is removed, never followed
    td.prepare(job)
    td.remove()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs tasks as other uids")
async def test_without_cgroups_a_task_uid_still_bounds_its_processes(tmp_path: Path) -> None:
    # RLIMIT_NPROC counts the uid's processes: the task's own, since the uid is its alone.
    os.chmod(tmp_path, 0o711)
    script = (
        "import os, signal\n"
        "kids, refused = [], 0\n"
        "for _ in range(40):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        refused += 1\n"
        "        continue\n"
        "    if pid == 0:\n"
        "        signal.pause()\n"
        "    kids.append(pid)\n"
        "for pid in kids:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "print(len(kids), refused)\n"
    )
    job = _job(["python3", "-c", script])
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    uid = 1_900_600_100
    run = TaskRun(
        job,
        td,
        ProcessRuntime(),
        CgroupLayout(0),
        log_tail_bytes=4096,
        run_as=(uid, uid),
        max_pids=8,
    )
    await run.run()
    started, refused = (int(n) for n in (run.result.executor_logs[0].stdout or "").split())
    assert started < 8 and refused == 40 - started


def test_a_marked_wrapper_records_the_outcome_and_never_starts_twice(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    started, status = str(tmp_path / "0.started"), str(tmp_path / "0.status")
    argv = ResourceGroup(0, [], None).wrap(
        ["sh", "-c", f"echo ran >> {out}; exit 4"], marks=(started, status)
    )
    assert subprocess.run(argv, check=False).returncode == 4
    first = Path(started).read_text().split()
    assert first[0].isdigit() and Path(status).read_text() == "4\n"
    # A second start (an adopter that did not see the first): runs nothing.
    again = subprocess.run(argv, check=False, capture_output=True)
    assert again.returncode == LOST_START and again.stderr == b""
    assert out.read_text() == "ran\n"
    assert Path(started).read_text().split() == first


def test_a_marked_wrapper_records_a_signal_as_128_plus_n(tmp_path: Path) -> None:
    started, status = str(tmp_path / "0.started"), str(tmp_path / "0.status")
    argv = ResourceGroup(0, [], None).wrap(["sh", "-c", "kill -9 $$"], marks=(started, status))
    assert subprocess.run(argv, check=False).returncode == 137
    assert Path(status).read_text() == "137\n"
