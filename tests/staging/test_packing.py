"""Packing an output sandbox never reads through a symlink, even one swapped in late."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from jobgate.runner.taskdir import TaskDir
from jobgate.staging import packing


def test_a_directory_swapped_for_a_symlink_after_listing_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "data"
    outside.mkdir()
    (outside / "admin-token").write_text("SECRET")
    taskdir = TaskDir(tmp_path / "task")
    (taskdir.root / "out" / "sub").mkdir(parents=True)
    (taskdir.root / "out" / "sub" / "admin-token").write_text("decoy")
    (taskdir.root / "out" / "kept.txt").write_text("kept")
    listed = packing._tree

    def list_then_swap(td: TaskDir, container: str) -> list[tuple[Path, str]]:
        # What a task process still running could do between the listing and the reads.
        entries = listed(td, container)
        sub = td.root / "out" / "sub"
        (sub / "admin-token").unlink()
        sub.rmdir()
        sub.symlink_to(outside)
        return entries

    monkeypatch.setattr(packing, "_tree", list_then_swap)
    dest = tmp_path / "out.tar.gz"
    count, unmatched = packing.pack_outputs(taskdir, ["/out"], dest, limit=1 << 20)
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        data = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert b"SECRET" not in data.values()
    assert data == {"out/kept.txt": b"kept"}
    assert "out/sub/admin-token" not in names and count == len(names) and not unmatched
