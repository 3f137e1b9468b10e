"""The task uid pool: one uid per running task, reused last."""

from __future__ import annotations

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
