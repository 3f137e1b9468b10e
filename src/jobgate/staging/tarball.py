"""Checking and extracting untrusted tar archives, safely whatever the Python version.

tarfile's own ``data`` filter is not used: it judges members with ``os.path.realpath``,
which before Python 3.11.13 / 3.12.11 / 3.13.4 stops resolving once a path passes
PATH_MAX, so deep directories and symlink chains let links and hard links out of the
destination (CVE-2025-4517). Here instead:

- :func:`check` reads every header of the archive first and refuses it, naming the
  member and the reason, if any member is unsafe or the whole exceeds the limits. The
  rules are lexical and need no file system, so an upload can be judged before it is
  kept, and :func:`extract` writes nothing at all unless the whole archive passes.
- :func:`extract` then writes member by member through directory file descriptors: every
  path component is opened with ``O_NOFOLLOW | O_DIRECTORY`` and every file created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW``, so no path is ever resolved through a symlink, and
  one that is already in the destination stops the extraction instead of redirecting it.

The rules: a leading ``/`` is dropped from member names (as GNU tar and the ``data``
filter do); names with ``..``, NUL, a component over 255 bytes, more than 4095 bytes or
256 levels are refused, as are devices, FIFOs and unknown member types. A member may not
sit under a name that this archive made a symlink or a file. A symlink's target must be
relative, with its ``..`` components only at the start and no more of them than the
link is deep: it then resolves inside the destination through any chain of such links,
whatever is extracted later. A hard link must name a regular file extracted earlier from
the same archive (checked again by inode when linking). Files and directories belong to
the extracting process (never the archive's uid/gid); setuid, setgid, sticky and group or
other write bits are dropped; the owner can always read and write.
"""

from __future__ import annotations

import contextlib
import errno
import lzma
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import zstandard

MAX_NAME_BYTES = 4095
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 256
COPY_CHUNK = 1 << 20
DIR_FDS = 32  # directory descriptors kept open per extraction; the least recently used go

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# What a damaged or truncated archive raises while it is read.
READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    zstandard.ZstdError,
)


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Bounds on what one tarball may unpack to: a few KiB of gzip can expand to terabytes."""

    max_bytes: int = 10 * 1024**3
    max_files: int = 100_000


class TarballRefused(Exception):
    """The archive is not extracted; ``member`` names the member at fault."""

    def __init__(self, member: str, why: str) -> None:
        super().__init__(f"member {member!r}: {why}")
        self.member = member
        self.why = why


class UnsafeMember(TarballRefused):
    """A member that could write, link or point outside the destination, or a special file."""


class OverLimit(TarballRefused):
    """The archive holds more entries or bytes than :class:`ExtractLimits` allow."""


class Kind(Enum):
    DIR = "directory"
    FILE = "file"
    SYMLINK = "symlink"
    HARDLINK = "hard link"


@dataclass(frozen=True, slots=True)
class Entry:
    """One member as it will be written: its path under the destination, split."""

    member: tarfile.TarInfo
    parts: tuple[str, ...]
    kind: Kind
    source: tuple[str, ...] = ()  # a hard link's target, split like ``parts``


@dataclass(frozen=True, slots=True)
class Summary:
    entries: int
    bytes: int


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
TAR_HEADER = 512


def _is_zstd(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ZSTD_MAGIC


def is_tarball(path: Path) -> bool:
    """True for a tar archive, plain or compressed (gzip, bzip2, xz, zstd; judged by
    content, never by name)."""
    try:
        if _is_zstd(path):
            with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
                head = z.read(TAR_HEADER)
            # The POSIX (ustar, pax, GNU) magic of the first header: tarfile would need
            # the whole first member to judge (a pax header runs on to the next block).
            return head[257:262] == b"ustar"
        return tarfile.is_tarfile(path)
    except (*READ_ERRORS, ValueError):
        return False


@contextlib.contextmanager
def _opened(src: Path, limits: ExtractLimits) -> Iterator[tarfile.TarFile]:
    """``src`` opened as a tar archive. tarfile reads zstd only from Python 3.14 on, so a
    zstd archive is decompressed to an unnamed temporary file first, bounded by the
    limits (headers included: at most one 512-byte header and padding per entry)."""
    if not _is_zstd(src):
        with tarfile.open(src) as tar:
            yield tar
        return
    bound = limits.max_bytes + (limits.max_files + 2) * 2 * TAR_HEADER
    with tempfile.TemporaryFile() as plain:
        with src.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
            size = 0
            while block := z.read(COPY_CHUNK):
                size += len(block)
                if size > bound:
                    raise OverLimit(src.name, f"the tarball unpacks to more than {bound} bytes")
                plain.write(block)
        plain.seek(0)
        with tarfile.open(fileobj=plain, mode="r:") as tar:
            yield tar


def check(src: Path, limits: ExtractLimits) -> Summary:
    """Read all of ``src``'s headers and apply the rules without writing anything.

    Raises :class:`UnsafeMember` or :class:`OverLimit` naming the member, or one of
    ``READ_ERRORS`` for an archive that cannot be read.
    """
    with _opened(src, limits) as tar:
        entries = plan(tar, limits)
    return Summary(len(entries), sum(e.member.size for e in entries if e.kind is Kind.FILE))


def extract(src: Path, dest: Path, limits: ExtractLimits) -> None:
    """Extract ``src`` into the directory ``dest`` (created if missing) by the rules above.

    The whole archive is checked first; a refusal then leaves nothing written. A failure
    while writing (a damaged archive, a full disk, a directory or symlink of the same
    name already in ``dest``) stops at that member and leaves what was written so far.
    ``dest`` itself must not be a symlink.
    """
    with _opened(src, limits) as tar:
        entries = plan(tar, limits)
        dest.mkdir(parents=True, exist_ok=True)
        writer = _Writer(dest, limits.max_bytes)
        try:
            for entry in entries:
                writer.write(tar, entry)
            writer.finish()
        finally:
            writer.close()


def plan(tar: tarfile.TarFile, limits: ExtractLimits) -> list[Entry]:
    """Every member of ``tar`` checked against the rules and the limits, in archive order."""
    kinds: dict[tuple[str, ...], Kind] = {(): Kind.DIR}
    entries: list[Entry] = []
    total = 0
    for member in tar:
        if len(entries) >= limits.max_files:
            raise OverLimit(member.name, f"the tarball holds more than {limits.max_files} entries")
        entry = _entry(member, kinds)
        if entry.kind is Kind.FILE:
            total += member.size
            if total > limits.max_bytes:
                raise OverLimit(
                    member.name, f"the tarball unpacks to more than {limits.max_bytes} bytes"
                )
        entries.append(entry)
    return entries


def _entry(member: tarfile.TarInfo, kinds: dict[tuple[str, ...], Kind]) -> Entry:
    """Check one member against what the archive has made so far (``kinds``, updated)."""
    name = member.name
    parts = _parts(name, name, "name")
    if member.isdir():
        kind = Kind.DIR
    elif member.isreg():
        kind = Kind.FILE
    elif member.issym():
        kind = Kind.SYMLINK
    elif member.islnk():
        kind = Kind.HARDLINK
    elif member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeMember(name, "a device or FIFO (special file) is never extracted")
    else:
        raise UnsafeMember(name, f"unsupported member type {member.type!r}")
    if not parts and kind is not Kind.DIR:
        raise UnsafeMember(name, f"a {kind.value} cannot replace the destination itself")
    for depth in range(1, len(parts)):
        prefix = parts[:depth]
        found = kinds.setdefault(prefix, Kind.DIR)
        if found is not Kind.DIR:
            shown = "/".join(prefix)
            raise UnsafeMember(name, f"it would be written through the {found.value} {shown!r}")
    existing = kinds.get(parts)
    if kind is Kind.DIR and existing not in (None, Kind.DIR):
        assert existing is not None
        raise UnsafeMember(name, f"a directory over the {existing.value} of the same name")
    if kind is not Kind.DIR and existing is Kind.DIR:
        raise UnsafeMember(name, f"a {kind.value} over the directory of the same name")
    source: tuple[str, ...] = ()
    if kind is Kind.SYMLINK:
        _check_symlink(name, member.linkname, parts)
    elif kind is Kind.HARDLINK:
        source = _hardlink_source(name, member.linkname, parts, kinds)
    kinds[parts] = Kind.FILE if kind is Kind.HARDLINK else kind
    return Entry(member, parts, kind, source)


def _parts(member: str, path: str, what: str) -> tuple[str, ...]:
    """``path`` split into components, without empty and ``.`` ones and a leading ``/``."""
    if "\0" in path:
        raise UnsafeMember(member, f"NUL in the {what}")
    if len(os.fsencode(path)) > MAX_NAME_BYTES:
        raise UnsafeMember(member, f"the {what} is longer than {MAX_NAME_BYTES} bytes")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeMember(member, f"'..' in the {what} {path!r} (outside the destination)")
    if len(parts) > MAX_DEPTH:
        raise UnsafeMember(member, f"the {what} is more than {MAX_DEPTH} levels deep")
    if any(len(os.fsencode(p)) > MAX_COMPONENT_BYTES for p in parts):
        raise UnsafeMember(member, f"a component of the {what} is over {MAX_COMPONENT_BYTES} bytes")
    return parts


def _check_symlink(name: str, target: str, parts: tuple[str, ...]) -> None:
    """A symlink's ``..`` may climb only real directories of the link's own path: never
    one reached through another link, whose ``..`` the kernel takes from the link's target."""
    if not target:
        raise UnsafeMember(name, "the symlink's target is empty")
    if "\0" in target:
        raise UnsafeMember(name, "NUL in the symlink's target")
    if target.startswith("/"):
        raise UnsafeMember(name, f"the symlink points to the absolute path {target!r}")
    if len(os.fsencode(target)) > MAX_NAME_BYTES:
        raise UnsafeMember(name, f"the symlink's target is longer than {MAX_NAME_BYTES} bytes")
    comps = [c for c in target.split("/") if c not in ("", ".")]
    ups = 0
    while ups < len(comps) and comps[ups] == "..":
        ups += 1
    if ".." in comps[ups:]:
        raise UnsafeMember(
            name,
            f"the symlink's target {target!r} has '..' after a name (through another link "
            "that could lead outside the destination)",
        )
    if ups > len(parts) - 1:
        raise UnsafeMember(name, f"the symlink's target {target!r} is outside the destination")
    if any(len(os.fsencode(c)) > MAX_COMPONENT_BYTES for c in comps):
        raise UnsafeMember(
            name, f"a component of the symlink's target is over {MAX_COMPONENT_BYTES} bytes"
        )


def _hardlink_source(
    name: str, target: str, parts: tuple[str, ...], kinds: dict[tuple[str, ...], Kind]
) -> tuple[str, ...]:
    if target.startswith("/"):
        raise UnsafeMember(name, f"the hard link points to the absolute path {target!r}")
    source = _parts(name, target, "hard link's target")
    if source == parts:
        raise UnsafeMember(name, "the hard link points to itself")
    if kinds.get(source) is not Kind.FILE:
        raise UnsafeMember(
            name,
            f"the hard link's target {target!r} is not a regular file earlier in the archive",
        )
    return source


def file_mode(mode: int) -> int:
    """A file's mode: no setuid/setgid/sticky or group/other write; the owner reads and
    writes; group and other execute only if the owner does."""
    mode = (mode & 0o755) | 0o600
    return mode if mode & 0o100 else mode & ~0o111


def dir_mode(mode: int) -> int:
    """A directory's mode: as for files, and the owner may always enter and write."""
    return (mode & 0o755) | 0o700


class _Writer:
    """Writes checked entries under one destination directory, through descriptors only."""

    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.root = os.open(dest, DIR_FLAGS)
        self.dirs: dict[tuple[str, ...], int] = {}
        self.left = max_bytes
        self.created: set[tuple[int, int]] = set()  # (st_dev, st_ino) of files written here
        self.dir_times: list[tuple[tuple[str, ...], float]] = []

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()
        os.close(self.root)

    def write(self, tar: tarfile.TarFile, entry: Entry) -> None:
        if entry.kind is Kind.DIR:
            fd = self.dir(entry.parts, entry)
            if entry.parts:
                os.fchmod(fd, dir_mode(entry.member.mode))
                self.dir_times.append((entry.parts, entry.member.mtime))
            return
        parent = self.dir(entry.parts[:-1], entry)
        name = entry.parts[-1]
        if entry.kind is Kind.FILE:
            self._clear(parent, name, entry)
            self._file(tar, entry, parent, name)
        elif entry.kind is Kind.SYMLINK:
            self._clear(parent, name, entry)
            os.symlink(entry.member.linkname, name, dir_fd=parent)
        else:
            self._hardlink(entry)

    def finish(self) -> None:
        """Directory times last: writing into a directory changes its mtime."""
        for parts, mtime in reversed(self.dir_times):
            _set_mtime(self.dir(parts, None), mtime)

    def dir(self, parts: tuple[str, ...], entry: Entry | None) -> int:
        """A descriptor of the directory ``parts`` (created 0755 if missing), owned by the
        writer: valid until the next call."""
        if not parts:
            return self.root
        fd = self.dirs.pop(parts, None)
        if fd is not None:
            self.dirs[parts] = fd  # now the most recently used
            return fd
        parent = self.dir(parts[:-1], entry)
        name = parts[-1]
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            os.fchmod(fd, 0o755)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            shown = "/".join(parts)
            raise UnsafeMember(
                entry.member.name if entry else shown,
                f"{shown!r} in the destination is a symlink or a file, not a directory",
            ) from None
        while len(self.dirs) >= DIR_FDS:
            os.close(self.dirs.pop(next(iter(self.dirs))))
        self.dirs[parts] = fd
        return fd

    def _clear(self, parent: int, name: str, entry: Entry) -> None:
        """Remove a non-directory already at ``name`` (the archive's later member wins)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeMember(entry.member.name, "a directory of that name is in the way")
        os.unlink(name, dir_fd=parent)

    def _file(self, tar: tarfile.TarFile, entry: Entry, parent: int, name: str) -> None:
        member = entry.member
        src = tar.extractfile(member)
        assert src is not None  # a regular file always has a data stream
        with src, os.fdopen(os.open(name, FILE_FLAGS, 0o600, dir_fd=parent), "wb") as out:
            written = 0
            while chunk := src.read(COPY_CHUNK):
                written += len(chunk)
                if written > member.size or written > self.left:
                    # The headers were checked; this only trips if the data disagree.
                    raise OverLimit(member.name, "more data than the headers declare")
                out.write(chunk)
            self.left -= written
            out.flush()
            os.fchmod(out.fileno(), file_mode(member.mode))
            _set_mtime(out.fileno(), member.mtime)
            st = os.fstat(out.fileno())
            self.created.add((st.st_dev, st.st_ino))

    def _hardlink(self, entry: Entry) -> None:
        """Link to a file this writer created: found by name, confirmed by inode."""
        src_dir = os.dup(self.dir(entry.source[:-1], entry))
        try:
            src_name = entry.source[-1]
            try:
                st = os.stat(src_name, dir_fd=src_dir, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is None or (st.st_dev, st.st_ino) not in self.created:
                raise UnsafeMember(
                    entry.member.name,
                    "the hard link's target is not a file extracted from this archive",
                )
            parent = self.dir(entry.parts[:-1], entry)
            name = entry.parts[-1]
            self._clear(parent, name, entry)
            os.link(src_name, name, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(src_dir)


def _set_mtime(fd: int, mtime: float) -> None:
    # A time the file system cannot hold is not worth failing the task for.
    with contextlib.suppress(OverflowError, ValueError, OSError):
        os.utime(fd, (mtime, mtime))
