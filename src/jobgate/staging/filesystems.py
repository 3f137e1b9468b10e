"""``s3://`` and ``ftp://`` over fsspec (s3fs and fsspec's FTP filesystem).

The fsspec calls are blocking and run in worker threads. Reads and writes go one piece at
a time: S3 objects are read by one streamed GET and written by multipart upload (one part
per chunk), FTP files by one RETR/STOR data connection each.
"""

from __future__ import annotations

import contextlib
import ftplib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from fsspec.callbacks import Callback
from fsspec.implementations.ftp import FTPFileSystem

from jobgate.domain.models import FileType
from jobgate.staging.base import Entry, Store
from jobgate.staging.transfer import (
    STREAM_CHUNK,
    Budget,
    Meter,
    MeteredReader,
    MeteredWriter,
    copy_stream,
    in_thread,
)

T = TypeVar("T")


def s3_filesystem(endpoint_url: str | None, timeout: float) -> Any:
    """An s3fs filesystem; credentials and region come from the standard ``AWS_*``
    variables (botocore reads them). Retries are ours: botocore's are switched off."""
    import s3fs  # imported here: botocore costs ~0.3 s at start-up

    return s3fs.S3FileSystem(
        endpoint_url=endpoint_url or None,
        skip_instance_cache=True,
        config_kwargs={
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": 1, "mode": "standard"},
        },
    )


def _entries(found: dict[str, dict[str, Any]], base: str) -> list[Entry]:
    out = []
    for name, info in sorted(found.items()):
        if info.get("type") == "directory" or name.endswith("/"):
            continue  # S3 "directory marker" objects and FTP directories
        rel = name[len(base) :].lstrip("/") if name.startswith(base) else ""
        if rel:
            out.append(Entry(rel, info.get("size")))
    return out


def _kind(info: dict[str, Any]) -> FileType:
    return FileType.DIRECTORY if info.get("type") == "directory" else FileType.FILE


class _Metered(Callback):  # type: ignore[misc]
    """An fsspec progress callback that meters (and so can stop) a download."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter

    def relative_update(self, inc: int = 1) -> None:
        self.meter.add(inc)


class S3Store(Store):
    """``s3://bucket/key``: the key is taken literally (S3 URLs are not percent-encoded)."""

    def __init__(self, url: str, fs: Any, chunk: int) -> None:
        super().__init__(url)
        self.fs = fs
        self.path = url.split("://", 1)[1].rstrip("/")
        self.chunk = chunk

    def url_of(self, rel: str) -> str:
        return self.shown.rstrip("/") + "/" + rel if rel else self.shown

    def _key(self, rel: str) -> str:
        return f"{self.path}/{rel}" if rel else self.path

    async def kind(self) -> FileType:
        return _kind(await in_thread(lambda _a: self.fs.info(self.path)))

    async def listing(self) -> list[Entry]:
        found = await in_thread(lambda _a: self.fs.find(self.path, detail=True))
        return _entries(found, self.path)

    async def download(self, rel: str, dest: Path, budget: Budget) -> int:
        def copy(abort: threading.Event) -> int:
            meter = Meter(budget, abort)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():  # s3fs would skip the file without a word
                raise IsADirectoryError(f"{dest.name} is a directory in the task")
            try:
                # One streamed GET, read in small pieces; concurrent ranged GETs would
                # hold several chunks at once (and some servers read the whole object for
                # every range).
                self.fs.get_file(
                    self._key(rel), str(dest), callback=_Metered(meter), max_concurrency=1
                )
            except BaseException:
                meter.undo()
                raise
            return meter.count

        return await in_thread(copy)

    async def upload(self, src: Path, rel: str, budget: Budget) -> int:
        def copy(abort: threading.Event) -> int:
            meter = Meter(budget, abort)
            fout = self.fs.open(self._key(rel), "wb", block_size=self.chunk)
            try:
                with src.open("rb") as fin:
                    copy_stream(fin, fout, meter, self.chunk)
                fout.close()  # completes the multipart upload
            except BaseException:
                # Not close(): that would publish a truncated object. discard() aborts it.
                with contextlib.suppress(Exception):
                    fout.discard()
                meter.undo()
                raise
            return meter.count

        return await in_thread(copy)


def _makedirs(fs: FTPFileSystem, path: str) -> None:
    """``mkdir -p`` that tolerates a parallel upload creating the same directories: a
    "550 exists" answer is checked against a fresh listing, a level at a time."""
    tries = path.count("/") + 2  # each lost race still creates at least one level
    for attempt in range(1, tries + 1):
        try:
            fs.makedirs(path, exist_ok=True)
            return
        except ftplib.error_perm:
            fs.invalidate_cache()
            if attempt == tries:
                raise


class FtpStore(Store):
    """``ftp://[user[:password]@]host[:port]/path``; ``host`` is already resolved and
    checked by the guard, and every connection goes to that address."""

    def __init__(
        self,
        url: str,
        address: str,
        port: int,
        username: str,
        password: str,
        path: str,
        *,
        timeout: float,
    ) -> None:
        super().__init__(url)
        self.address = address
        self.port = port
        self.username = username
        self.password = password
        self.path = path.rstrip("/") or "/"
        self.timeout = timeout

    def _with_ftp(self, op: Callable[[FTPFileSystem], T]) -> T:
        # One connection per operation: an ftplib connection serves one transfer at a
        # time, and parallel transfers each need their own.
        fs = FTPFileSystem(
            self.address,
            port=self.port,
            username=self.username,
            password=self.password,
            timeout=self.timeout,
            block_size=STREAM_CHUNK,
            skip_instance_cache=True,
        )
        try:
            return op(fs)
        finally:
            ftp = cast(ftplib.FTP, fs.ftp)
            with contextlib.suppress(Exception):
                ftp.quit()
            ftp.close()

    def _key(self, rel: str) -> str:
        return f"{self.path.rstrip('/')}/{rel}" if rel else self.path

    async def kind(self) -> FileType:
        return _kind(await in_thread(lambda _a: self._with_ftp(lambda fs: fs.info(self.path))))

    async def listing(self) -> list[Entry]:
        found = await in_thread(
            lambda _a: self._with_ftp(lambda fs: fs.find(self.path, detail=True))
        )
        return _entries(found, self.path)

    async def download(self, rel: str, dest: Path, budget: Budget) -> int:
        def copy(abort: threading.Event) -> int:
            meter = Meter(budget, abort)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with dest.open("wb") as fout:
                    sink = cast(BinaryIO, MeteredWriter(fout, meter))
                    self._with_ftp(lambda fs: fs.get_file(self._key(rel), sink))
            except BaseException:
                meter.undo()
                raise
            return meter.count

        return await in_thread(copy)

    async def upload(self, src: Path, rel: str, budget: Budget) -> int:
        key = self._key(rel)
        parent = key.rsplit("/", 1)[0]

        def store(fs: FTPFileSystem, fin: BinaryIO, meter: Meter) -> None:
            if parent:
                _makedirs(fs, parent)
            reader = cast(BinaryIO, MeteredReader(fin, meter))
            cast(ftplib.FTP, fs.ftp).storbinary(f"STOR {key}", reader, blocksize=STREAM_CHUNK)

        def copy(abort: threading.Event) -> int:
            meter = Meter(budget, abort)
            try:
                with src.open("rb") as fin:
                    self._with_ftp(lambda fs: store(fs, fin, meter))
            except BaseException:
                meter.undo()
                raise
            return meter.count

        return await in_thread(copy)
