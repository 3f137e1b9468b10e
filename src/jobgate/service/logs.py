"""Executors' stdout/stderr for the API: read from the job's backend while it runs, from
the kept copy (``<logs dir>/<job id>/<n>.stdout``) once it is final, and followed as they
grow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from jobgate.backends.base import Backend, FileLogReader, LogReader
from jobgate.domain.models import Job
from jobgate.domain.states import FINAL
from jobgate.errors import InvalidRequest, JobNotFound
from jobgate.runner.logfiles import CHUNK, Stream, open_plain
from jobgate.service.events import EventBus, Overflow
from jobgate.store.jobs import JobStore

__all__ = ["JobLogs", "Stream"]


class JobLogs:
    """Reads (and follows) one executor's output of a job."""

    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        *,
        backends: Mapping[str, Backend],
        logs_dir: Path,
        poll: float = 0.1,
        recheck: float = 5.0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.backends = backends
        self.logs_dir = logs_dir
        self.poll = poll
        self.recheck = recheck

    def kept(self, job_id: str) -> Path:
        return self.logs_dir / job_id

    async def check(self, job_id: str, index: int) -> Job:
        """The job (JobNotFound if unknown); InvalidRequest if it has no executor ``index``."""
        rec = await self.store.get(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        job = rec.to_job()
        if not 0 <= index < len(job.executors):
            raise InvalidRequest(
                f"job {job_id} has {len(job.executors)} executor(s); no executor {index}",
                errors=[{"where": "query.executor", "what": f"0 to {len(job.executors) - 1}"}],
            )
        return job

    async def _open(
        self, job: Job, native_id: str | None, index: int, stream: Stream, final: bool
    ) -> LogReader | None:
        if final:
            fd = open_plain(self.kept(job.id) / f"{index}.{stream}")
            return None if fd is None else FileLogReader(fd)
        backend = self.backends.get(job.backend)
        if backend is None:
            return None
        return await backend.open_log(job, native_id, index, stream)

    async def tail(self, job: Job, index: int, stream: Stream, limit: int) -> str:
        """The last ``limit`` bytes (at most) written so far to an executor's stream,
        decoded (a character cut at the start is replaced)."""
        kept = bytearray()
        async for chunk in self.read(job, index, stream, follow=False):
            kept += chunk
            if len(kept) > 2 * limit:
                del kept[:-limit]
        return bytes(kept[-limit:]).decode("utf-8", errors="replace")

    async def read(
        self, job: Job, index: int, stream: Stream, *, follow: bool
    ) -> AsyncIterator[bytes]:
        """The output so far; with ``follow``, then what is written until the job is final.

        A reader opened on the running job's output stays valid when the dispatcher keeps
        it at the end, so following never loses the tail.
        """
        loop = asyncio.get_running_loop()
        async with self.bus.subscribe(lambda e: e.job_id == job.id) as sub:
            rec = await self.store.get(job.id)
            final = rec is None or rec.state in FINAL
            native_id = rec.native_id if rec is not None else None
            reader: LogReader | None = None
            checked = loop.time()
            try:
                while True:
                    if reader is None:
                        reader = await self._open(job, native_id, index, stream, final)
                    data = await reader.read(CHUNK) if reader is not None else b""
                    if data:
                        yield data
                        continue
                    if final or not follow:
                        return
                    try:
                        event = await self.bus.next(sub, self.poll)
                    except Overflow:  # only this job's events: hardly ever; ask the store
                        while not sub.queue.empty():
                            sub.queue.get_nowait()
                        sub.overflowed = False
                        event = None
                        checked = float("-inf")
                    if event is not None and event.to_state in FINAL:
                        final = True
                    elif loop.time() - checked >= self.recheck:
                        checked = loop.time()
                        rec = await self.store.get(job.id)
                        final = rec is None or rec.state in FINAL
                        if rec is not None and reader is None:
                            native_id = rec.native_id
            finally:
                if reader is not None:
                    reader.close()
