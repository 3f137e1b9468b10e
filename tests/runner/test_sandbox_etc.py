"""The sandbox's /etc copy, built by several processes of one data dir at once (API
workers, dispatchers, a restarted gateway): every build succeeds, one copy stays, and a
copy a running sandbox may still show is not emptied under it."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from jobgate.runtimes.argv import build_etc


def _build_five_times(dest: str) -> bool:
    for _ in range(5):
        build_etc(dest)
    return True


def test_processes_building_the_sandbox_etc_at_once_all_succeed(tmp_path: Path) -> None:
    dest = tmp_path / "sandbox-etc"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert all(pool.map(_build_five_times, [str(dest)] * 4))
    assert sorted(os.listdir(tmp_path)) == [".sandbox-etc.lock", "sandbox-etc"]
    assert (dest / "passwd").read_text() == Path("/etc/passwd").read_text()


def test_a_replaced_copy_is_kept_for_the_sandboxes_that_still_show_it(tmp_path: Path) -> None:
    dest = tmp_path / "sandbox-etc"
    build_etc(str(dest))
    inode = dest.stat().st_ino
    build_etc(str(dest))  # /etc unchanged: the copy in place stays, the new one is dropped
    assert dest.stat().st_ino == inode
    (dest / "passwd").write_text("changed\n")  # as if the host's /etc changed meanwhile
    build_etc(str(dest))
    assert (dest / "passwd").read_text() == Path("/etc/passwd").read_text()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".sandbox-etc-old-")]
    assert len(kept) == 1 and kept[0].stat().st_ino == inode
    assert (kept[0] / "passwd").read_text() == "changed\n"
