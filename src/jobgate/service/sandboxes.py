"""Sandboxes: files or tarballs stored once under their sha256, referenced by jobs as
``sandbox:<sha256>`` inputs; and output sandboxes, a job's declared files packed as a
tar.gz sandbox when it ends.

A sandbox is ``<sandboxes dir>/<sha256>`` plus a row in ``sandboxes``. Bodies are
streamed to a temporary file while hashing; the file is renamed into place before the
row is written, so a recorded sandbox always has its bytes. A tarball that could never be
extracted (an unsafe member, over the extraction limits, unreadable) is refused at upload
with the member and the reason; staging checks again, whatever was stored before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobgate.errors import InvalidRequest, JobgateError
from jobgate.runner.taskdir import TaskDir
from jobgate.staging import SHA256, pack_outputs
from jobgate.staging.tarball import READ_ERRORS, ExtractLimits, TarballRefused, check, is_tarball
from jobgate.store.sandboxes import SandboxRow, SandboxStore

WRITE_BATCH = 1 << 20


class TooLarge(JobgateError):
    status = 413
    code = "too_large"


class SandboxNotFound(JobgateError):
    status = 404
    code = "not_found"


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    sha256: str
    size: int
    existed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "url": f"sandbox:{self.sha256}",
            "existed": self.existed,
        }


async def receive(
    chunks: AsyncIterable[bytes], dest: Path, *, limit: int, what: str
) -> tuple[str, int]:
    """Write ``chunks`` to the new file ``dest`` (fsynced), hashing on the way.

    Returns (sha256 hex, size). Beyond ``limit`` bytes raises :class:`TooLarge` and
    leaves no file. Writes are batched into one thread hop per MiB.
    """
    digest = hashlib.sha256()
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    f = await asyncio.to_thread(dest.open, "xb")
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"{what} is larger than the limit of {limit} bytes")
            digest.update(chunk)
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= WRITE_BATCH:
                await asyncio.to_thread(f.writelines, pending)
                pending, pending_size = [], 0
        await asyncio.to_thread(_finish, f, pending)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)  # no await here: this also runs when the task is cancelled
        raise
    f.close()
    return digest.hexdigest(), size


def _finish(f: Any, pending: list[bytes]) -> None:
    f.writelines(pending)
    f.flush()
    os.fsync(f.fileno())


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(WRITE_BATCH):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class Sandboxes:
    """Upload, look up and pack sandboxes."""

    def __init__(
        self,
        store: SandboxStore,
        root: Path,
        *,
        max_bytes: int,
        extract_limits: ExtractLimits | None = None,
    ) -> None:
        self.store = store
        self.root = root
        self.max_bytes = max_bytes
        self.extract_limits = extract_limits or ExtractLimits()

    def path(self, sha256: str) -> Path:
        """Where a sandbox's bytes are; :class:`SandboxNotFound` for a malformed name."""
        if not SHA256.fullmatch(sha256):
            raise SandboxNotFound(f"no sandbox {sha256!r} (a sandbox is named by its sha256)")
        return self.root / sha256

    def _partial(self) -> Path:
        partial = self.root / ".partial"
        partial.mkdir(parents=True, exist_ok=True)
        return partial / uuid.uuid4().hex

    async def upload(
        self,
        chunks: AsyncIterable[bytes],
        *,
        owner: str | None = None,
        declared_size: int | None = None,
    ) -> SandboxInfo:
        """Store a body; the same content is stored once (``existed`` says it was there).

        A tar archive (plain or compressed) must pass the extractor's checks, or the answer
        is :class:`~jobgate.errors.InvalidRequest` naming the member, and nothing is kept.
        """
        if declared_size is not None and declared_size > self.max_bytes:
            raise TooLarge(f"the sandbox is larger than the limit of {self.max_bytes} bytes")
        tmp = await asyncio.to_thread(self._partial)
        sha, size = await receive(chunks, tmp, limit=self.max_bytes, what="the sandbox")
        try:
            await asyncio.to_thread(self._check_tarball, tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # no await here: this also runs when the task is cancelled
            raise
        return await self._commit(tmp, sha, size, owner)

    def _check_tarball(self, path: Path) -> None:
        if not is_tarball(path):
            return
        try:
            check(path, self.extract_limits)
        except TarballRefused as exc:
            raise InvalidRequest(
                f"the sandbox is a tarball that would not be extracted: {exc}",
                errors=[{"where": f"body: member {exc.member!r}", "what": exc.why}],
            ) from exc
        except READ_ERRORS as exc:
            raise InvalidRequest(
                f"the sandbox looks like a tar archive but cannot be read: {exc}",
                errors=[{"where": "body", "what": f"unreadable tar archive: {exc}"}],
            ) from exc

    async def _commit(self, tmp: Path, sha: str, size: int, owner: str | None) -> SandboxInfo:
        final = self.root / sha
        if final.is_file():
            await asyncio.to_thread(tmp.unlink)
        else:
            await asyncio.to_thread(os.replace, tmp, final)
        created = await self.store.add(sha, size, owner)
        return SandboxInfo(sha, size, existed=not created)

    async def find(self, sha256: str) -> SandboxRow:
        """The sandbox's record; :class:`SandboxNotFound` unless it exists with its bytes."""
        path = self.path(sha256)
        row = await self.store.get(sha256)
        if row is None or not path.is_file():
            raise SandboxNotFound(f"no sandbox {sha256}")
        return row

    async def pack(
        self, job_id: str, owner: str | None, taskdir: TaskDir, patterns: list[str]
    ) -> tuple[SandboxInfo | None, list[str]]:
        """Pack a finished job's ``output_sandbox`` files and record it as the job's output.

        Returns the sandbox (None if nothing matched) and notes for the job's system logs.
        Raises :class:`~jobgate.errors.StagingError` beyond the size limit (nothing is kept
        then). Either way an earlier attempt's output sandbox no longer counts as this job's.
        """
        await self.store.set_output(job_id, None)
        tmp = await asyncio.to_thread(self._partial)
        try:
            count, unmatched = await asyncio.to_thread(
                pack_outputs, taskdir, patterns, tmp, limit=self.max_bytes
            )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        notes = [f"output_sandbox: nothing matched {p}" for p in unmatched]
        if not count:
            return None, notes
        sha, size = await asyncio.to_thread(_sha256_file, tmp)
        info = await self._commit(tmp, sha, size, owner)
        await self.store.set_output(job_id, sha)
        notes.append(f"output_sandbox: {count} entries packed as sandbox:{sha} ({size} bytes)")
        return info, notes

    async def output_of(self, job_id: str) -> SandboxRow:
        """A job's output sandbox; :class:`SandboxNotFound` with the reason if it has none."""
        sha = await self.store.output_of(job_id)
        if sha is None:
            raise SandboxNotFound(
                f"job {job_id} has no output sandbox (it declares no output_sandbox, "
                "has not ended yet, or none of its output_sandbox paths matched a file)"
            )
        return await self.find(sha)
