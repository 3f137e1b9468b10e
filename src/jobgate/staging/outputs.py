"""Uploading a task's outputs, and the ``logs.outputs`` entries that list them.

Every output is planned first (which task files, which URL each goes to), then all files
are uploaded in parallel within the mover's limit. A failure does not stop the others:
whatever can be delivered is, and every failure is reported.
"""

from __future__ import annotations

import asyncio
import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import FileType, Job, Output, OutputFileLog
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir
from jobgate.staging.base import Store
from jobgate.staging.inputs import fill
from jobgate.staging.mover import Mover
from jobgate.staging.stores import Stores
from jobgate.staging.transfer import Budget


class PartialStagingError(StagingError):
    """Some outputs failed; ``uploaded`` lists the files that were delivered."""

    def __init__(self, message: str, uploaded: list[OutputFileLog]) -> None:
        super().__init__(message)
        self.uploaded = uploaded


@dataclass(frozen=True)
class Upload:
    store: Store
    container_path: str
    src: Path
    rel: str


async def stage_out(
    job: Job,
    taskdir: TaskDir,
    *,
    stores: Stores,
    mover: Mover,
    budget: Budget,
    in_place: set[str] | frozenset[str] = frozenset(),
) -> tuple[list[OutputFileLog], bool]:
    """Upload every output. Returns the file logs and whether a ``type`` was filled in.
    Outputs whose container path is in ``in_place`` are already at their URL (a host
    mount): they are listed (a regular file with its size), not copied.

    Raises :class:`PartialStagingError` if any output could not be (fully) uploaded; its
    message names each failed output, and it carries the logs of the files delivered.
    """
    failures: list[str] = []
    uploads: list[Upload] = []
    filled = False
    placed: list[OutputFileLog] = []
    for out in job.outputs or []:
        if out.path in in_place:
            try:
                placed += await asyncio.to_thread(_in_place_log, out)
            except FileNotFoundError:
                failures.append(f"output {out.path}: no such file or directory")
            continue
        try:
            store = await stores.open(out.url, what="output")
            files, kind = await asyncio.to_thread(collect, out, taskdir)
        except StagingError as exc:
            failures.append(exc.message)
            continue
        except (OSError, PathEscape) as exc:
            failures.append(f"output {out.path}: {exc}")
            continue
        uploads += [Upload(store, cpath, src, rel) for cpath, src, rel in files]
        if kind is not None:
            filled |= fill(out, kind)

    async def one(u: Upload) -> OutputFileLog:
        size = await mover.transfer(
            "output", u.store, u.rel, lambda: u.store.upload(u.src, u.rel, budget)
        )
        return OutputFileLog(url=u.store.url_of(u.rel), path=u.container_path, size_bytes=str(size))

    results = await asyncio.gather(*(one(u) for u in uploads), return_exceptions=True)
    logs: list[OutputFileLog] = placed
    for result in results:
        if isinstance(result, OutputFileLog):
            logs.append(result)
        elif isinstance(result, StagingError):
            failures.append(result.message)
        elif isinstance(result, BaseException):
            raise result
    if failures:
        more = f" (and {len(failures) - 1} more failures)" if len(failures) > 1 else ""
        raise PartialStagingError(failures[0] + more, logs)
    return logs, filled


def _in_place_log(out: Output) -> list[OutputFileLog]:
    # lstat: the gateway follows no link a task may have left in a shared directory.
    st = os.lstat(out.path)
    if not stat.S_ISREG(st.st_mode):
        return []
    return [OutputFileLog(url=out.url, path=out.path, size_bytes=str(st.st_size))]


def collect(out: Output, taskdir: TaskDir) -> tuple[list[tuple[str, Path, str]], FileType | None]:
    """What an output uploads: (container path, host path, path below the URL) triples,
    and the output's type when it had to be found out (not for wildcards)."""
    if out.has_wildcards:
        # The root is literal text; only the task's own path may hold wildcards.
        pattern = glob.escape(str(taskdir.root)) + out.path
        prefix = (out.path_prefix or "").rstrip("/")
        files = []
        for match in sorted(glob.glob(pattern)):
            container = "/" + Path(match).relative_to(taskdir.root).as_posix()
            host = taskdir.host(container)
            entries = _walk(host, container, taskdir) if host.is_dir() else [(container, host, "")]
            for cpath, hpath, _ in entries:
                rel = cpath[len(prefix) :] if cpath.startswith(prefix) else cpath
                files.append((cpath, hpath, rel.lstrip("/")))
        return files, None
    host = taskdir.host(out.path)
    if not host.exists():
        raise StagingError(f"output {out.path}: no such file or directory in the task")
    if host.is_dir():
        if out.type == FileType.FILE:
            raise StagingError(f"output {out.path}: is a directory but type is FILE")
        return _walk(host, out.path, taskdir), FileType.DIRECTORY
    if out.type == FileType.DIRECTORY:
        raise StagingError(f"output {out.path}: is a file but type is DIRECTORY")
    return [(out.path, host, "")], FileType.FILE


def _walk(base: Path, container_base: str, taskdir: TaskDir) -> list[tuple[str, Path, str]]:
    """Files below a directory as (container path, safe host path, path relative to base)."""
    found = []
    for dirpath, dirs, names in os.walk(base):  # never follows symlinked directories
        dirs.sort()
        for name in sorted(names):
            host = Path(dirpath) / name
            rel = host.relative_to(base).as_posix()
            container = container_base.rstrip("/") + "/" + rel
            found.append((container, taskdir.host(container), rel))
    return found
