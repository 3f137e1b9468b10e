"""How the runner drives the runtime hooks (prepare, finish) around each executor."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

from jobgate.domain.models import Job, now
from jobgate.domain.states import State
from jobgate.runner.executors import TaskRun
from jobgate.runner.taskdir import TaskDir
from jobgate.runtimes.base import ExecSpec, Finished, RuntimeFailure
from jobgate.runtimes.cgroups import CgroupLayout
from jobgate.runtimes.process import ProcessRuntime


class SlowImageRuntime(ProcessRuntime):
    """Plain processes behind an image step that blocks until released (a long pull)."""

    def __init__(self, fail: str | None = None) -> None:
        self.preparing = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.finished: list[tuple[str, int | None]] = []

    def prepare(self, spec: ExecSpec) -> None:
        self.preparing.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeFailure(self.fail)

    def finish(self, spec: ExecSpec, returncode: int | None) -> Finished:
        self.finished.append((spec.name, returncode))
        return Finished()


def _job(*commands: list[str]) -> Job:
    return Job.model_validate(
        {
            "id": str(uuid.uuid4()),
            "creation_time": now(),
            "executors": [{"image": "alpine", "command": c} for c in commands],
        }
    )


async def test_a_cancel_during_the_image_step_starts_nothing(tmp_path: Path) -> None:
    runtime = SlowImageRuntime()
    job = _job(["sh", "-c", "echo ran > ran.txt"])
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    run = TaskRun(job, td, runtime, CgroupLayout.detect(), log_tail_bytes=4096)
    task = asyncio.create_task(run.run())
    await asyncio.to_thread(runtime.preparing.wait, 10)
    run.cancel()
    runtime.release.set()
    result = await task
    assert result.state == State.CANCELED
    assert result.executor_logs == []
    assert not (td.root / "ran.txt").exists()


async def test_a_failed_image_step_is_a_system_error_and_each_start_is_finished(
    tmp_path: Path,
) -> None:
    failing = SlowImageRuntime(fail="image 'x' is not available: pull failed: no route")
    failing.release.set()
    job = _job(["true"])
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    result = await TaskRun(job, td, failing, CgroupLayout.detect(), log_tail_bytes=4096).run()
    assert result.state == State.SYSTEM_ERROR
    assert "pull failed: no route" in result.system_logs[0]
    assert failing.finished == []  # nothing was started, nothing to clean

    ok = SlowImageRuntime()
    ok.release.set()
    job = _job(["true"], ["sh", "-c", "exit 3"])
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    result = await TaskRun(job, td, ok, CgroupLayout.detect(), log_tail_bytes=4096).run()
    assert result.state == State.EXECUTOR_ERROR
    assert ok.finished == [(f"jobgate-{job.id}-0", 0), (f"jobgate-{job.id}-1", 3)]
