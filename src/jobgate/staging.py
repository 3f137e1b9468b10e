"""Moving a task's inputs in and its outputs out, with the path guards.

Schemes today: inline ``content``, ``file://`` (or a bare absolute path) under the
operator's allowed directories, and ``http(s)://`` for inputs. Anything else is accepted
at create and fails here with a clear line, as TES clients expect.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import httpx

from jobgate.domain.models import FileType, Input, Job, Output, OutputFileLog
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir

INPUT_SCHEMES = ("file", "http", "https")
OUTPUT_SCHEMES = ("file",)


def scheme_of(url: str) -> str:
    return "file" if url.startswith("/") else urlparse(url).scheme.lower()


def local_path(url: str, allowed: tuple[Path, ...], *, what: str) -> Path:
    """The host path of a ``file://`` URL, if it lies under an allowed directory."""
    if url.startswith("/"):
        raw = url
    else:
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise StagingError(f"{what} {url}: file URLs must not name a host")
        raw = unquote(parsed.path)
    if not allowed:
        raise StagingError(
            f"{what} {url}: file:// URLs are disabled on this server "
            "(the operator sets JOBGATE_ALLOWED_DIRS to allow directories)"
        )
    path = Path(os.path.realpath(raw))
    if not any(path == d or path.is_relative_to(d) for d in allowed):
        raise StagingError(f"{what} {url}: not under an allowed directory")
    return path


class Stager:
    """Stages one task at a time; shares an HTTP client across tasks."""

    def __init__(
        self, allowed_dirs: tuple[Path, ...], http: httpx.AsyncClient, max_content_bytes: int
    ) -> None:
        self.allowed_dirs = allowed_dirs
        self.http = http
        self.max_content_bytes = max_content_bytes

    # -- in ----------------------------------------------------------------------------

    async def stage_in(self, job: Job, taskdir: TaskDir) -> bool:
        """Place every input at its path. Returns True if it filled in an input's ``type``.

        Raises :class:`StagingError` naming the input and the cause.
        """
        filled = False
        for inp in job.inputs or []:
            try:
                dest = taskdir.host(inp.path)
            except PathEscape as exc:
                raise StagingError(f"input {inp.path}: {exc}") from exc
            if inp.content is not None:
                await asyncio.to_thread(_write_text, dest, inp.content)
                filled |= _fill(inp, FileType.FILE)
                continue
            assert inp.url is not None  # the model requires url or content
            scheme = scheme_of(inp.url)
            if scheme == "file":
                src = local_path(inp.url, self.allowed_dirs, what="input")
                kind = await asyncio.to_thread(_copy_in, src, dest, inp)
                filled |= _fill(inp, kind)
            elif scheme in ("http", "https"):
                if inp.type == FileType.DIRECTORY:
                    raise StagingError(f"input {inp.url}: directories cannot be fetched over HTTP")
                await self._download(inp.url, dest)
                filled |= _fill(inp, FileType.FILE)
            else:
                raise StagingError(
                    f"input {inp.url}: unsupported URL scheme {scheme!r} "
                    f"(supported: {', '.join(INPUT_SCHEMES)})"
                )
        return filled

    async def _download(self, url: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with self.http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise StagingError(f"input {url}: HTTP {response.status_code}")
                with dest.open("wb") as f:
                    async for chunk in response.aiter_bytes(1 << 20):
                        f.write(chunk)
        except httpx.HTTPError as exc:
            raise StagingError(f"input {url}: {type(exc).__name__}: {exc}") from exc

    # -- out ---------------------------------------------------------------------------

    async def stage_out(self, job: Job, taskdir: TaskDir) -> tuple[list[OutputFileLog], bool]:
        """Upload every output. Returns the file logs and whether a ``type`` was filled in.

        Raises :class:`StagingError` on the first output that cannot be uploaded; the
        logs of outputs already uploaded are attached to the error as ``uploaded``.
        """
        logs: list[OutputFileLog] = []
        filled = False
        for out in job.outputs or []:
            scheme = scheme_of(out.url)
            if scheme not in OUTPUT_SCHEMES:
                raise _partial(
                    f"output {out.url}: unsupported URL scheme {scheme!r} "
                    f"(supported: {', '.join(OUTPUT_SCHEMES)})",
                    logs,
                )
            try:
                dest = local_path(out.url, self.allowed_dirs, what="output")
                files, kind = await asyncio.to_thread(_collect, out, taskdir)
                for container_path, src, rel in files:
                    target = dest / rel if rel else dest
                    size = await asyncio.to_thread(_copy_file, src, target)
                    # Quoted: a file named "a#b" or "50%" must still be a URL of that file.
                    url = out.url if not rel else out.url.rstrip("/") + "/" + quote(rel)
                    logs.append(OutputFileLog(url=url, path=container_path, size_bytes=str(size)))
            except StagingError as exc:
                raise _partial(exc.message, logs) from exc
            except (OSError, PathEscape) as exc:
                raise _partial(f"output {out.path}: {exc}", logs) from exc
            if kind is not None:
                filled |= _fill(out, kind)
        return logs, filled


class PartialStagingError(StagingError):
    def __init__(self, message: str, uploaded: list[OutputFileLog]) -> None:
        super().__init__(message)
        self.uploaded = uploaded


def _partial(message: str, uploaded: list[OutputFileLog]) -> PartialStagingError:
    return PartialStagingError(message, list(uploaded))


def _fill(item: Input | Output, kind: FileType) -> bool:
    if item.type is None:
        item.type = kind
        return True
    return False


def _write_text(dest: Path, content: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(content, encoding="utf-8")


def _copy_in(src: Path, dest: Path, inp: Input) -> FileType:
    if not src.exists():
        raise StagingError(f"input {inp.url}: no such file or directory")
    if src.is_dir():
        if inp.type == FileType.FILE:
            raise StagingError(f"input {inp.url}: is a directory but type is FILE")
        shutil.copytree(src, dest, symlinks=False, dirs_exist_ok=True)
        return FileType.DIRECTORY
    if inp.type == FileType.DIRECTORY:
        raise StagingError(f"input {inp.url}: is a file but type is DIRECTORY")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return FileType.FILE


def _copy_file(src: Path, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target.stat().st_size


def _walk(base: Path, container_base: str, taskdir: TaskDir) -> list[tuple[str, Path, str]]:
    """Files below a directory as (container path, safe host path, path relative to base)."""
    found = []
    for dirpath, _dirs, names in os.walk(base):
        for name in sorted(names):
            host = Path(dirpath) / name
            rel = host.relative_to(base).as_posix()
            container = container_base.rstrip("/") + "/" + rel
            found.append((container, taskdir.host(container), rel))
    return found


def _collect(out: Output, taskdir: TaskDir) -> tuple[list[tuple[str, Path, str]], FileType | None]:
    """What an output uploads: (container path, host path, suffix for the URL) triples."""
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
