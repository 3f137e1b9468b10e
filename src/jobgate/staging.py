"""Moving a task's inputs in and its outputs out, with the path guards.

Schemes today: inline ``content``, ``file://`` (or a bare absolute path) under the
operator's allowed directories, ``http(s)://`` for inputs, and ``sandbox:<sha256>`` for
inputs uploaded to ``/api/v1/sandboxes`` (a tarball is extracted into the input's path).
Anything else is accepted at create and fails here with a clear line, as TES clients expect.
Files uploaded into a held job are placed at their container paths before the inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import io
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlparse

import httpx

from jobgate.domain.models import WILDCARDS, FileType, Input, Job, Output, OutputFileLog
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

INPUT_SCHEMES = ("file", "http", "https", "sandbox")
SHA256 = re.compile(r"[0-9a-f]{64}")
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


def sandbox_ref(url: str) -> str | None:
    """The sha256 named by ``sandbox:<sha256>`` or ``sandbox://<sha256>``; None if malformed."""
    ref = url.split(":", 1)[1].removeprefix("//").strip("/").lower() if ":" in url else ""
    return ref if SHA256.fullmatch(ref) else None


class Stager:
    """Stages one task at a time; shares an HTTP client across tasks.

    ``uploads_dir/<job id>`` holds files uploaded into held jobs and ``sandboxes_dir/<sha>``
    the content-addressed sandboxes; without them those features are off.
    """

    def __init__(
        self,
        allowed_dirs: tuple[Path, ...],
        http: httpx.AsyncClient,
        max_content_bytes: int,
        *,
        uploads_dir: Path | None = None,
        sandboxes_dir: Path | None = None,
    ) -> None:
        self.allowed_dirs = allowed_dirs
        self.http = http
        self.max_content_bytes = max_content_bytes
        self.uploads_dir = uploads_dir
        self.sandboxes_dir = sandboxes_dir

    # -- in ----------------------------------------------------------------------------

    async def stage_in(self, job: Job, taskdir: TaskDir) -> bool:
        """Place every input at its path. Returns True if it filled in an input's ``type``.

        Raises :class:`StagingError` naming the input and the cause.
        """
        filled = False
        uploads = None if self.uploads_dir is None else self.uploads_dir / job.id
        # One stat on the loop (local data dir): most jobs have no uploads and should not
        # pay a thread hop to learn it.
        if uploads is not None and os.path.isdir(uploads):  # noqa: ASYNC240
            await asyncio.to_thread(_place_uploads, uploads, taskdir)
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
            elif scheme == "sandbox":
                kind = await asyncio.to_thread(self._place_sandbox, inp, dest)
                filled |= _fill(inp, kind)
            else:
                raise StagingError(
                    f"input {inp.url}: unsupported URL scheme {scheme!r} "
                    f"(supported: {', '.join(INPUT_SCHEMES)})"
                )
        return filled

    def _place_sandbox(self, inp: Input, dest: Path) -> FileType:
        """A tarball sandbox is extracted into ``dest`` (unless the input says FILE); any
        other sandbox is copied to ``dest``."""
        assert inp.url is not None
        sha = sandbox_ref(inp.url)
        if sha is None:
            raise StagingError(f"input {inp.url}: expected sandbox:<sha256>")
        src = None if self.sandboxes_dir is None else self.sandboxes_dir / sha
        if src is None or not src.is_file():
            raise StagingError(f"input {inp.url}: no such sandbox")
        if inp.type != FileType.FILE and _is_tarball(src):
            extract_tarball(src, dest, what=f"input {inp.url}")
            return FileType.DIRECTORY
        if inp.type == FileType.DIRECTORY:
            raise StagingError(f"input {inp.url}: not a tarball but type is DIRECTORY")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return FileType.FILE

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


def _place_uploads(src_root: Path, taskdir: TaskDir) -> None:
    """Copy a held job's uploads to their container paths (``/`` + path under ``src_root``).

    Copies, not links: a rescheduled job must start again from the uploaded bytes.
    """
    if not src_root.is_dir():
        return
    for dirpath, _dirs, names in os.walk(src_root):  # never follows symlinked directories
        for name in names:
            src = Path(dirpath) / name
            if not stat.S_ISREG(src.lstat().st_mode):
                continue  # the upload API writes regular files only; ignore anything else
            container = "/" + src.relative_to(src_root).as_posix()
            try:
                dest = taskdir.host(container)
            except PathEscape as exc:
                raise StagingError(f"uploaded file {container}: {exc}") from exc
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)


def _is_tarball(path: Path) -> bool:
    """True for a tar archive, plain or compressed (judged by content, never by name)."""
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


def extract_tarball(src: Path, dest: Path, *, what: str) -> None:
    """Extract ``src`` into the directory ``dest`` with tarfile's ``data`` filter.

    The filter strips leading ``/`` and refuses members that would land outside ``dest``
    (``..``), links pointing outside it, and device files; any refusal fails the staging.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(src) as tar:
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise StagingError(f"{what}: unsafe tarball refused: {exc}") from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise StagingError(f"{what}: cannot extract the tarball: {exc}") from exc


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
    anything resolving outside the task. Returns (entries packed, patterns that matched
    nothing); with no entry, ``dest`` is not left behind. Raises :class:`StagingError`
    as soon as the archive would exceed ``limit`` bytes (``dest`` is then incomplete).
    """
    root = taskdir.root
    seen: set[str] = set()
    unmatched: list[str] = []

    def reset(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        return ti.replace(uid=0, gid=0, uname="", gname="", deep=False)

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
                    if arcname not in seen:
                        seen.add(arcname)
                        tar.add(path, arcname=arcname, recursive=False, filter=reset)
            if len(seen) == before:
                unmatched.append(pattern)
    if not seen:
        dest.unlink()
    return len(seen), unmatched


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
