"""Inputs that come from the gateway itself: ``sandbox:<sha256>`` tarballs uploaded to
``/api/v1/sandboxes``, and files uploaded into a held job."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import FileType, Input
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Bounds on what one tarball may unpack to: a few KiB of gzip can expand to terabytes."""

    max_bytes: int = 10 * 1024**3
    max_files: int = 100_000


def sandbox_ref(url: str) -> str | None:
    """The sha256 named by ``sandbox:<sha256>`` or ``sandbox://<sha256>``; None if malformed."""
    ref = url.split(":", 1)[1].removeprefix("//").strip("/").lower() if ":" in url else ""
    return ref if SHA256.fullmatch(ref) else None


def place_sandbox(
    sandboxes_dir: Path | None, inp: Input, dest: Path, limits: ExtractLimits
) -> FileType:
    """A tarball sandbox is extracted into ``dest`` (unless the input says FILE); any
    other sandbox is copied to ``dest``."""
    assert inp.url is not None
    sha = sandbox_ref(inp.url)
    if sha is None:
        raise StagingError(f"input {inp.url}: expected sandbox:<sha256>")
    src = None if sandboxes_dir is None else sandboxes_dir / sha
    if src is None or not src.is_file():
        raise StagingError(f"input {inp.url}: no such sandbox")
    if inp.type != FileType.FILE and _is_tarball(src):
        extract_tarball(src, dest, what=f"input {inp.url}", limits=limits)
        return FileType.DIRECTORY
    if inp.type == FileType.DIRECTORY:
        raise StagingError(f"input {inp.url}: not a tarball but type is DIRECTORY")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return FileType.FILE


def place_uploads(src_root: Path, taskdir: TaskDir) -> None:
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


def write_text(dest: Path, content: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(content, encoding="utf-8")


def _is_tarball(path: Path) -> bool:
    """True for a tar archive, plain or compressed (judged by content, never by name)."""
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


def extract_tarball(
    src: Path, dest: Path, *, what: str, limits: ExtractLimits | None = None
) -> None:
    """Extract ``src`` into the directory ``dest`` with tarfile's ``data`` filter.

    The filter strips leading ``/`` and refuses members that would land outside ``dest``
    (``..``), links pointing outside it, and device files; any refusal fails the staging,
    as does unpacking more than ``limits`` allow (checked from the headers, before writing).
    """
    limits = limits or ExtractLimits()
    total = files = 0

    def bounded(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        nonlocal total, files
        files += 1
        total += member.size if member.isreg() else 0
        if files > limits.max_files:
            raise StagingError(f"{what}: the tarball holds more than {limits.max_files} entries")
        if total > limits.max_bytes:
            raise StagingError(f"{what}: the tarball unpacks to more than {limits.max_bytes} bytes")
        return tarfile.data_filter(member, path)

    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(src) as tar:
            tar.extractall(dest, filter=bounded)
    except tarfile.FilterError as exc:
        raise StagingError(f"{what}: unsafe tarball refused: {exc}") from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise StagingError(f"{what}: cannot extract the tarball: {exc}") from exc
