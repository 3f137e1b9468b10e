"""Executors' stdout/stderr files in a task directory: where they are while a job runs,
and keeping them once it ended.

While a job runs, executor ``n`` writes ``TaskDir.log_file(n, "stdout")`` (``"stderr"``),
or the container path its ``stdout``/``stderr`` field names. Before the job's final state
is recorded the dispatcher keeps them as ``<logs dir>/<job id>/<n>.stdout``, so a job seen
final has its logs in that place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from jobgate.domain.models import Executor
from jobgate.runner.taskdir import TaskDir

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
CHUNK = 64 * 1024


def open_beneath(root: Path, container_path: str) -> int | None:
    """A read-only descriptor of the regular file at ``container_path`` under ``root``.

    Walks one component at a time with ``O_NOFOLLOW``: a running executor that swaps a
    directory or its log file for a symlink cannot make us read a host file. None when
    the file is absent, is not a regular file, or a component is a symlink.
    """
    parts = [p for p in container_path.split("/") if p]
    if not parts or ".." in parts:
        return None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        out = os.open(parts[-1], flags, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        return None
    return out


def open_live(taskdir: TaskDir, executor: Executor, index: int, stream: Stream) -> int | None:
    """The running job's log file, or None if the executor has not created it yet."""
    custom = executor.stdout if stream == "stdout" else executor.stderr
    if custom:
        return open_beneath(taskdir.root, custom)
    return open_plain(taskdir.log_file(index, stream))


def keep_logs(taskdir: TaskDir, executors: Sequence[Executor], dest: Path, *, copy: bool) -> None:
    """Put every executor's stdout/stderr into ``dest`` (``<n>.stdout``, ``<n>.stderr``),
    replacing an earlier attempt's. Moves the runner's own files unless ``copy``; copies
    files at executor-chosen paths (they are the task's own files). An empty stream is
    not kept (a missing file reads as empty), nor ``dest`` made when all are: most
    trivial tasks print nothing."""
    shutil.rmtree(dest, ignore_errors=True)
    made = False
    for index, executor in enumerate(executors):
        for stream in STREAMS:
            target = dest / f"{index}.{stream}"
            custom = executor.stdout if stream == "stdout" else executor.stderr
            if not custom:
                src = taskdir.log_file(index, stream)
                try:
                    if os.stat(src).st_size == 0:
                        continue  # left to the task directory's removal
                except FileNotFoundError:
                    continue
                if not made:
                    dest.mkdir(parents=True, exist_ok=True)
                    made = True
                with contextlib.suppress(FileNotFoundError):
                    if copy:
                        shutil.copyfile(src, target)
                    else:
                        os.replace(src, target)
                continue
            fd = open_beneath(taskdir.root, custom)
            if fd is None:
                continue
            with os.fdopen(fd, "rb") as src_file:
                if os.fstat(src_file.fileno()).st_size == 0:
                    continue
                if not made:
                    dest.mkdir(parents=True, exist_ok=True)
                    made = True
                with target.open("wb") as out:
                    shutil.copyfileobj(src_file, out)


def keep_texts(texts: Sequence[tuple[str | None, str | None]], dest: Path) -> None:
    """Put each executor's (stdout, stderr) as reported by a backend that ran it
    elsewhere into ``dest`` (``<n>.stdout``, ``<n>.stderr``), replacing an earlier
    attempt's."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for index, pair in enumerate(texts):
        for stream, text in zip(STREAMS, pair, strict=True):
            if text is not None:
                (dest / f"{index}.{stream}").write_text(text, encoding="utf-8")


def open_plain(path: Path) -> int | None:
    """A read-only descriptor of ``path`` (not following a final symlink), or None."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
