"""Files uploaded into a held job: create (``hold: true``) → upload → start.

An uploaded ``path`` lands at the container path ``/path`` when the job is staged, before
its declared inputs (see :func:`jobgate.staging.Stager.stage_in`). Uploads are accepted
only while the job is PAUSED (held), and kept until the job is deleted, so a rescheduled
job starts again from the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import uuid
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

from jobgate.domain.models import reserved_path
from jobgate.domain.states import State
from jobgate.errors import Conflict, InvalidRequest
from jobgate.service.native import NativeJobs
from jobgate.service.sandboxes import TooLarge, receive

MAX_PATH = 4096
MAX_NAME = 255


def upload_path(path: str) -> str:
    """``path`` checked as a relative path inside the job: no empty, ``.`` or ``..``
    component (so no absolute path and no escape), no NUL. Raises InvalidRequest."""
    parts = path.split("/")
    bad = (
        not path
        or len(path) > MAX_PATH
        or "\x00" in path
        or any(p in ("", ".", "..") or len(p.encode()) > MAX_NAME for p in parts)
    )
    if bad:
        raise InvalidRequest(
            f"invalid upload path {path!r}",
            errors=[
                {
                    "where": "path",
                    "what": "a relative path like data/in.txt: no leading '/', no empty, "
                    "'.' or '..' component",
                }
            ],
        )
    why = reserved_path(path)
    if why is not None:
        raise InvalidRequest(
            f"invalid upload path {path!r}: {why}",
            errors=[{"where": "path", "what": f"no task can read a file there: {why}"}],
        )
    return path


class JobUploads:
    """Upload into held jobs and list what was uploaded."""

    def __init__(self, native: NativeJobs, *, max_bytes: int) -> None:
        self.native = native
        self.max_bytes = max_bytes

    async def _held(self, job_id: str) -> None:
        rec = await self.native.get(job_id)
        if rec.state != State.PAUSED:
            raise Conflict(
                f"job {job_id} is {rec.state}; files can be uploaded only while it is held "
                "(submit it with hold: true, upload, then start it)"
            )

    async def put(
        self,
        job_id: str,
        path: str,
        chunks: AsyncIterable[bytes],
        *,
        declared_size: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store one file; returns its description and whether it replaced one."""
        await self._held(job_id)
        rel = upload_path(path)
        if declared_size is not None and declared_size > self.max_bytes:
            raise TooLarge(f"the file is larger than the upload limit of {self.max_bytes} bytes")
        root = self.native.uploads_dir(job_id)
        partial = root.parent / ".partial"
        await asyncio.to_thread(partial.mkdir, parents=True, exist_ok=True)
        tmp = partial / uuid.uuid4().hex
        sha, size = await receive(chunks, tmp, limit=self.max_bytes, what="the file")
        try:
            # Started meanwhile: the file would miss the staging; refuse rather than lose it.
            await self._held(job_id)
            replaced = await asyncio.to_thread(_place, tmp, root, rel)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return {"path": "/" + rel, "size": size, "sha256": sha}, replaced

    async def list(self, job_id: str) -> list[dict[str, Any]]:
        """The job's uploaded files as ``{path, size}``, sorted by path."""
        await self.native.get(job_id)
        return await asyncio.to_thread(_list, self.native.uploads_dir(job_id))


def _place(tmp: Path, root: Path, rel: str) -> bool:
    """Rename ``tmp`` to ``root/rel``; no component may be a symlink or a file."""
    root.mkdir(parents=True, exist_ok=True)
    parent = root
    for part in rel.split("/")[:-1]:
        parent = parent / part
        try:
            parent.mkdir(parents=True)
        except FileExistsError:
            if not stat.S_ISDIR(parent.lstat().st_mode):
                raise Conflict(f"/{rel}: /{parent.relative_to(root)} is a file") from None
    dest = root / rel
    replaced = False
    with contextlib.suppress(FileNotFoundError):
        mode = dest.lstat().st_mode
        if not stat.S_ISREG(mode):
            raise Conflict(f"/{rel} is a directory; upload files into it instead")
        replaced = True
    os.replace(tmp, dest)
    return replaced


def _list(root: Path) -> list[dict[str, Any]]:
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                out.append({"path": "/" + path.relative_to(root).as_posix(), "size": st.st_size})
    return sorted(out, key=lambda f: str(f["path"]))
