"""The task uid pool: one uid per running task, reused last."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobgate.runner.uids import NoFreeUid, TaskUids


def test_running_tasks_never_share_a_uid_and_a_freed_one_comes_back_last() -> None:
    pool = TaskUids(5000, 3)
    a, b = pool.lease(), pool.lease()
    assert a == (5000, 5000) and b == (5001, 5001)
    pool.release(a[0])
    assert pool.lease() == (5002, 5002)  # not 5000 again while another was never used
    assert pool.lease() == (5000, 5000)
    with pytest.raises(NoFreeUid, match="JOBGATE_TASK_UID_COUNT"):
        pool.lease()
    pool.release(4999)  # never leased: ignored
    with pytest.raises(NoFreeUid):
        pool.lease()


def test_pools_of_two_processes_on_one_lock_dir_never_lease_one_uid(tmp_path: Path) -> None:
    # Two dispatcher processes on one host: each has its own pool over the same uids.
    first, second = TaskUids(7000, 3, tmp_path), TaskUids(7000, 3, tmp_path)
    a = {first.lease()[0] for _ in range(2)}
    b = second.lease()[0]
    assert b not in a
    with pytest.raises(NoFreeUid):
        second.lease()
    first.release(min(a))
    assert second.lease()[0] == min(a)
    # A uid held for an adopted task is not handed out by the other pool.
    second.release(b)
    assert first.hold(b)
    assert not second.hold(b)
