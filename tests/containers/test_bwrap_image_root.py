"""bubblewrap with an unpacked image directory as the sandbox's root (``dir:`` images)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from jobgate.domain.models import Job, now
from jobgate.domain.states import State
from jobgate.runner.executors import TaskRun
from jobgate.runner.taskdir import TaskDir
from jobgate.runtimes.bwrap import BwrapRuntime
from jobgate.runtimes.cgroups import CgroupLayout
from jobgate.runtimes.images import ImageCatalog
from tests.conftest import requires_bwrap
from tests.containers.servers import build_rootfs, static_busybox

pytestmark = [
    requires_bwrap,
    pytest.mark.skipif(static_busybox() is None, reason="busybox-static is not installed"),
]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_rootfs(tmp_path_factory.mktemp("bwrap-image") / "root")
    (root / "etc" / "image-release").write_text("busybox-test\n")
    return root


async def _run(
    tmp_path: Path,
    image: str,
    script: str,
    rootfs: Path,
    run_as: tuple[int, int] | None = None,
    **extra: object,
) -> TaskRun:
    job = Job.model_validate(
        {
            "id": str(uuid.uuid4()),
            "creation_time": now(),
            "executors": [{"image": image, "command": ["sh", "-c", script]}],
            **extra,
        }
    )
    td = TaskDir(tmp_path / job.id)
    td.prepare(job)
    runtime = BwrapRuntime(catalog=ImageCatalog({"bb": f"dir:{rootfs}", "gone": "dir:/nowhere"}))
    run = TaskRun(job, td, runtime, CgroupLayout.detect(), log_tail_bytes=4096, run_as=run_as)
    await run.run()
    return run


async def test_the_image_directory_replaces_the_hosts_system_dirs(
    tmp_path: Path, rootfs: Path
) -> None:
    script = "cat /etc/image-release; ls /usr 2>&1; echo x > /data/f; cat /data/f; id -u"
    run = await _run(tmp_path, "bb", script, rootfs, volumes=["/data", "/mnt/scratch"])
    assert run.result.state == State.COMPLETE, run.result
    out = run.result.executor_logs[0].stdout or ""
    lines = out.splitlines()
    assert lines[0] == "busybox-test"  # the image's /etc, not the host's
    assert "No such file" in lines[1]  # no host /usr in this root
    assert lines[2] == "x"
    assert lines[3] == "65534"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs tasks as other uids")
async def test_a_task_uid_applies_in_an_image_root_too(tmp_path: Path, rootfs: Path) -> None:
    # The host's setpriv runs there through the host's own loader and libraries.
    uid = 1_900_600_007
    script = "cat /etc/image-release; id -u; echo x > /data/f; cat /data/f; cat /proc/1/environ"
    run = await _run(tmp_path, "bb", script, rootfs, run_as=(uid, uid), volumes=["/data"])
    assert run.result.state == State.EXECUTOR_ERROR, run.result  # the last cat fails
    log = run.result.executor_logs[0]
    assert (log.stdout or "").splitlines() == ["busybox-test", str(uid), "x"]
    assert "Permission denied" in (log.stderr or "")


async def test_other_images_still_get_the_host_dirs(tmp_path: Path, rootfs: Path) -> None:
    run = await _run(tmp_path, "alpine", "test -d /usr/bin && echo host", rootfs)
    assert run.result.state == State.COMPLETE
    assert run.result.executor_logs[0].stdout == "host\n"


async def test_task_paths_inside_the_images_dirs_sit_beside_its_files(
    tmp_path: Path, rootfs: Path
) -> None:
    # CWL runners put inputs under /var/lib/cwl of the image; here a volume inside /bin.
    script = "echo hi > /bin/x/f && cat /bin/x/f && ls /bin/busybox && readlink /bin/sh"
    script += " && ! echo no > /bin/busybox"
    run = await _run(tmp_path, "bb", script, rootfs, volumes=["/bin/x"])
    assert run.result.state == State.COMPLETE, run.result.system_logs
    assert run.result.executor_logs[0].stdout == "hi\n/bin/busybox\nbusybox\n"
    assert (rootfs / "bin" / "busybox").stat().st_size > 1000  # the image is untouched
    assert not (rootfs / "bin" / "x").exists()


async def test_a_mapped_directory_that_is_missing_is_a_system_error(
    tmp_path: Path, rootfs: Path
) -> None:
    run = await _run(tmp_path, "gone", "true", rootfs)
    assert run.result.state == State.SYSTEM_ERROR
    assert "/nowhere" in run.result.system_logs[0]
