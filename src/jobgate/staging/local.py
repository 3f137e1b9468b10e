"""``file://`` URLs (and bare absolute paths): only under the operator's allowed directories.

Every file read or written is checked once its symlinks are resolved, so neither a link
inside an allowed directory nor ``..`` leads out of it.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobgate.domain.models import FileType
from jobgate.errors import StagingError
from jobgate.staging.base import Entry, Store
from jobgate.staging.transfer import STREAM_CHUNK, Budget, Meter, copy_stream, in_thread

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def local_path(url: str, allowed: tuple[Path, ...], *, what: str) -> Path:
    """The host path of a ``file://`` URL, if it lies under an allowed directory."""
    if url.startswith("/"):
        raw = url
    else:
        parsed = urlsplit(url)
        if parsed.netloc not in ("", "localhost"):
            raise StagingError(f"{what} {url}: file URLs must not name a host")
        raw = unquote(parsed.path)
    if not allowed:
        raise StagingError(
            f"{what} {url}: file:// URLs are disabled on this server "
            "(the operator sets JOBGATE_ALLOWED_DIRS to allow directories)"
        )
    path = Path(os.path.realpath(raw))
    if not _under(path, allowed):
        raise StagingError(f"{what} {url}: not under an allowed directory")
    return path


def _under(path: Path, allowed: tuple[Path, ...]) -> bool:
    return any(path == d or path.is_relative_to(d) for d in allowed)


class LocalStore(Store):
    def __init__(self, url: str, path: Path, allowed: tuple[Path, ...]) -> None:
        super().__init__(url)
        self.path = path
        self.allowed = allowed

    def _checked(self, rel: str) -> Path:
        path = Path(os.path.realpath(self.path / rel)) if rel else self.path
        if not _under(path, self.allowed):
            raise StagingError(f"{rel or self.path}: leads outside the allowed directories")
        return path

    async def kind(self) -> FileType:
        mode = (await in_thread(lambda _a: os.stat(self.path))).st_mode
        return FileType.DIRECTORY if stat.S_ISDIR(mode) else FileType.FILE

    async def listing(self) -> list[Entry]:
        return await in_thread(lambda _a: self._walk())

    def _walk(self) -> list[Entry]:
        found = []
        for dirpath, dirs, names in os.walk(self.path):  # never follows symlinked dirs
            dirs.sort()
            for name in sorted(names):
                rel = (Path(dirpath) / name).relative_to(self.path).as_posix()
                target = self._checked(rel)  # a symlink may point anywhere: check where
                if target.is_file():
                    found.append(Entry(rel, target.stat().st_size))
        return found

    async def download(self, rel: str, dest: Path, budget: Budget) -> int:
        def copy(abort: threading.Event) -> int:
            src = self._checked(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            meter = Meter(budget, abort)
            try:
                with src.open("rb") as fin, dest.open("wb") as fout:
                    return copy_stream(fin, fout, meter, STREAM_CHUNK)
            except BaseException:
                meter.undo()
                raise

        return await in_thread(copy)

    async def upload(self, src: Path, rel: str, budget: Budget) -> int:
        def copy(abort: threading.Event) -> int:
            target = self.path / rel if rel else self.path
            target.parent.mkdir(parents=True, exist_ok=True)
            # The parent, links resolved, must still be allowed; the file itself is opened
            # without following a link someone may have left there.
            if not _under(Path(os.path.realpath(target.parent)), self.allowed):
                raise StagingError(f"{rel or target}: leads outside the allowed directories")
            meter = Meter(budget, abort)
            try:
                fd = os.open(target, _WRITE_FLAGS, 0o644)
                with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
                    return copy_stream(fin, fout, meter, STREAM_CHUNK)
            except BaseException:
                meter.undo()
                raise

        return await in_thread(copy)
