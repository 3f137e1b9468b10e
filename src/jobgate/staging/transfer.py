"""What every transfer shares: chunked copies with a byte budget, retries with backoff,
and worker threads that stop when the task is canceled.

Copies move one chunk at a time, so memory per transfer stays near one chunk whatever the
file size: :data:`STREAM_CHUNK` for streams (local files, HTTP, FTP), the configured chunk
(8 MiB by default) where a store works in parts (S3 ranged reads, multipart parts).
"""

from __future__ import annotations

import asyncio
import ftplib
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO, ParamSpec, TypeVar

import httpx

from jobgate.errors import StagingError
from jobgate.staging.guard import Refused

T = TypeVar("T")
P = ParamSpec("P")

STREAM_CHUNK = 1024 * 1024


class Transient(Exception):
    """A failure worth another try (an HTTP 5xx, a store saying "slow down")."""


class Aborted(Exception):
    """The task was canceled while a worker thread was copying."""


class GaveUp(Exception):
    """A transient failure that lasted through every attempt."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.attempts = attempts


class Budget:
    """Bytes one task may still move in one direction (``limit`` 0: no limit).

    Shared by the task's parallel transfers, hence the lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, n: int) -> None:
        with self._lock:
            self.used += n
            if self.limit and self.used > self.limit:
                raise StagingError(
                    f"the task exceeds its transfer limit of {self.limit} bytes "
                    "(JOBGATE_STAGING_MAX_TASK_BYTES)"
                )

    def refund(self, n: int) -> None:
        with self._lock:
            self.used -= n


class Meter:
    """Counts one attempt's bytes against the budget, and stops it when aborted."""

    def __init__(self, budget: Budget, abort: threading.Event | None = None) -> None:
        self.budget = budget
        self.abort = abort
        self.count = 0

    def add(self, n: int) -> None:
        if self.abort is not None and self.abort.is_set():
            raise Aborted
        self.count += n
        self.budget.charge(n)

    def undo(self) -> None:
        """A failed attempt's bytes do not count: the retry moves them again."""
        self.budget.refund(self.count)
        self.count = 0


def copy_stream(src: BinaryIO, dst: BinaryIO, meter: Meter, chunk: int) -> int:
    """Copy ``src`` to ``dst`` ``chunk`` bytes at a time; returns the bytes copied."""
    while data := src.read(chunk):
        meter.add(len(data))
        dst.write(data)
    return meter.count


class MeteredReader:
    """A file opened for reading whose reads are metered (for uploads a library pulls)."""

    def __init__(self, f: BinaryIO, meter: Meter) -> None:
        self.f = f
        self.meter = meter

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.meter.add(len(data))
        return data


class MeteredWriter:
    """A local file a library pushes downloaded bytes into, metered; file-like enough for
    fsspec's ``get_file`` (which wants read/tell/close too)."""

    def __init__(self, f: BinaryIO, meter: Meter) -> None:
        self.f = f
        self.meter = meter

    def write(self, data: bytes) -> int:
        self.meter.add(len(data))
        return self.f.write(data)

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        """Closed by the caller that opened the file."""


async def in_thread(fn: Callable[[threading.Event], T]) -> T:
    """Run ``fn(abort)`` in a worker thread; if the caller is canceled, ``abort`` is set so
    the copy loop stops at its next chunk instead of running on unseen."""
    abort = threading.Event()
    try:
        return await asyncio.to_thread(fn, abort)
    except asyncio.CancelledError:
        abort.set()
        raise


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: connection trouble and server-side errors yes;
    a missing file, a refusal, bad credentials or a limit no."""
    if isinstance(exc, (StagingError, Refused, Aborted, ftplib.error_perm)):
        return False
    if isinstance(exc, (Transient, ftplib.error_temp, ftplib.error_reply, EOFError)):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    if isinstance(exc, NotADirectoryError | FileExistsError):
        return False
    if isinstance(exc, OSError):  # connection refused/reset, timeouts, s3fs's generic errors
        return True
    return _is_botocore_transient(exc)


def _is_botocore_transient(exc: BaseException) -> bool:
    try:
        from botocore import exceptions as boto
    except ImportError:  # pragma: no cover - s3fs brings botocore
        return False
    return isinstance(exc, (boto.ConnectionError, boto.HTTPClientError))


def describe(exc: BaseException) -> str:
    """A user-facing cause for a failed transfer."""
    if isinstance(exc, StagingError):
        return exc.message
    if isinstance(exc, GaveUp):
        return f"{describe(exc.cause)} (gave up after {exc.attempts} attempts)"
    if isinstance(exc, FileNotFoundError):
        detail = exc.strerror or str(exc)
        return f"not found ({detail})" if detail else "not found"
    if isinstance(exc, PermissionError):
        return f"permission denied ({exc})" if str(exc) else "permission denied"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror or exc}"
    if isinstance(exc, (Refused, Transient)):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the wait doubles from ``backoff`` up to ``backoff_max``."""

    attempts: int = 3
    backoff: float = 0.5
    backoff_max: float = 10.0

    async def run(self, op: Callable[[], Awaitable[T]]) -> T:
        """Await ``op()`` until it succeeds or fails for good. A permanent failure
        propagates unchanged; a transient one that outlasts the attempts as :class:`GaveUp`."""
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return await op()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.attempts:
                    raise GaveUp(exc, attempt) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
        raise AssertionError("unreachable")  # pragma: no cover
