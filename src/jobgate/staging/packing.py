"""Packing a job's ``output_sandbox`` into a tarball, and the directories it writes into."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from jobgate.domain.models import WILDCARDS
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def make_output_dirs(taskdir: TaskDir, patterns: list[str]) -> None:
    """Create the directories ``output_sandbox`` patterns write into, as for outputs: a
    sandbox shows only the task's directories, so files elsewhere would be lost."""
    for pattern in patterns:
        fixed = []
        for part in pattern.split("/")[:-1]:
            if any(c in WILDCARDS for c in part):
                break
            fixed.append(part)
        with contextlib.suppress(PathEscape):
            taskdir.host("/".join(fixed) or "/").mkdir(parents=True, exist_ok=True)


class _Capped(io.BufferedWriter):
    """A file that refuses to grow past ``limit`` bytes (checked as the bytes come)."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(io.FileIO(path, "wb"))
        self.limit = limit
        self.size = 0

    def write(self, data: ReadableBuffer, /) -> int:
        self.size += memoryview(data).nbytes
        if self.size > self.limit:
            raise StagingError(f"the archive exceeds the limit of {self.limit} bytes")
        return super().write(data)


def pack_outputs(
    taskdir: TaskDir, patterns: list[str], dest: Path, *, limit: int
) -> tuple[int, list[str]]:
    """Write the task files matched by ``patterns`` (container paths or globs) to the
    tar.gz ``dest``, named by container path without the leading ``/``.

    Regular files and directories only: symlinks and special files are skipped, and so is
    anything resolving outside the task. Each entry is opened again one path component at
    a time without following symlinks, so a task process that swaps a directory for a
    symlink after the listing cannot make the gateway pack a file outside the task.
    Returns (entries packed, patterns that matched nothing); with no entry, ``dest`` is
    not left behind. Raises :class:`StagingError` as soon as the archive would exceed
    ``limit`` bytes (``dest`` is then incomplete).
    """
    root = taskdir.root
    real_root = root.resolve()
    seen: set[str] = set()
    unmatched: list[str] = []

    with _Capped(dest, limit) as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for pattern in patterns:
            if any(c in WILDCARDS for c in pattern):
                matches = sorted(glob.glob(glob.escape(str(root)) + pattern))
            else:
                matches = [str(root) + pattern] if os.path.lexists(root / pattern[1:]) else []
            before = len(seen)
            for match in matches:
                rel = Path(match).relative_to(root).as_posix()
                container = "/" if rel == "." else "/" + rel
                for path, arcname in _tree(taskdir, container):
                    if arcname not in seen and _add(tar, real_root, path, arcname):
                        seen.add(arcname)
            if len(seen) == before:
                unmatched.append(pattern)
    if not seen:
        dest.unlink()
    return len(seen), unmatched


def _add(tar: tarfile.TarFile, root: Path, path: Path, arcname: str) -> bool:
    """Add ``path`` (under ``root``) as ``arcname`` if it is still a regular file or a
    directory reached without a symlink; False if it is not."""
    try:
        fd = _open_under(root, path.relative_to(root).parts)
    except (OSError, ValueError):
        return False  # gone, or now a symlink or special file: skipped like those
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, fd)
        st = os.fstat(fd)
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            info.size = st.st_size
            f = stack.enter_context(os.fdopen(fd, "rb", closefd=False))
            tar.addfile(info, f)
        else:
            return False
    return True


def _open_under(root: Path, parts: tuple[str, ...]) -> int:
    """A read-only descriptor of ``root/<parts>``, no component of which may be a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
        try:
            child = os.open(name, flags | (os.O_NONBLOCK if last else 0), dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def _tree(taskdir: TaskDir, container: str) -> list[tuple[Path, str]]:
    """(host path, archive name) of a container path and, for a directory, all below it."""
    if (taskdir.root / container.lstrip("/")).is_symlink():
        return []
    try:
        host = taskdir.host(container)
    except PathEscape:
        return []
    mode = host.lstat().st_mode
    if stat.S_ISREG(mode):
        return [(host, container.lstrip("/"))]
    if not stat.S_ISDIR(mode):
        return []
    base = container.strip("/")
    out = [(host, base)] if base else []
    for dirpath, dirs, names in os.walk(host):  # never follows symlinked directories
        dirs.sort()
        for name in [*dirs, *sorted(names)]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                rel = path.relative_to(host).as_posix()
                out.append((path, f"{base}/{rel}" if base else rel))
    return out
