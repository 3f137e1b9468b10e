"""Inputs that come from the gateway itself: ``sandbox:<sha256>`` tarballs uploaded to
``/api/v1/sandboxes``, and files uploaded into a held job."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from jobgate.domain.models import FileType, Input
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir
from jobgate.staging.tarball import (
    READ_ERRORS,
    ExtractLimits,
    OverLimit,
    UnsafeMember,
    extract,
    is_tarball,
)

SHA256 = re.compile(r"[0-9a-f]{64}")


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
    if inp.type != FileType.FILE and is_tarball(src):
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


def extract_tarball(
    src: Path, dest: Path, *, what: str, limits: ExtractLimits | None = None
) -> None:
    """Extract ``src`` into the directory ``dest`` by :mod:`.tarball`'s rules: the whole
    archive is checked (members and limits) before anything is written, and every write
    goes through directory descriptors that never follow a symlink.

    Raises :class:`StagingError` starting with ``what`` and naming the member at fault.
    """
    try:
        extract(src, dest, limits or ExtractLimits())
    except OverLimit as exc:
        raise StagingError(f"{what}: {exc.why} (at member {exc.member!r})") from exc
    except UnsafeMember as exc:
        raise StagingError(f"{what}: unsafe tarball refused: {exc}") from exc
    except READ_ERRORS as exc:
        raise StagingError(f"{what}: cannot extract the tarball: {exc}") from exc
