"""A scriptable in-process backend for tests of the dispatcher's logic (never a stand-in
for a real system in an end-to-end test).

A test tells it what the next submissions do (:meth:`FakeBackend.refuse`), moves its
jobs (:meth:`FakeBackend.move`), loses them (:meth:`FakeBackend.lose`), or pushes
updates (:meth:`FakeBackend.push`); it records every call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from jobgate.backends.base import Backend, BackendStatus, SubmitContext, SubmitError
from jobgate.domain.models import ExecutorLog, Job
from jobgate.domain.states import State


@dataclass
class FakeJob:
    job: Job
    ctx: SubmitContext
    status: BackendStatus


@dataclass
class Refusal:
    message: str
    transient: bool


@dataclass
class Calls:
    submits: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    polls: int = 0


class FakeBackend(Backend):
    """Jobs wait in its queue (QUEUED) until a test moves them, unless ``autorun``: then
    they run and complete at the next poll, printing their first command."""

    kind = "fake"
    submitted_state = State.QUEUED

    def __init__(self, name: str = "fake", *, autorun: bool = False, push: bool = False) -> None:
        super().__init__()
        self.name = name
        self.autorun = autorun
        self.jobs: dict[str, FakeJob] = {}
        self.calls = Calls()
        self.refusals: list[Refusal] = []
        self.delay = 0.0
        self._ids = itertools.count(1)
        self._push: asyncio.Queue[dict[str, BackendStatus]] | None = (
            asyncio.Queue() if push else None
        )

    # -- what tests do -------------------------------------------------------------------

    def refuse(
        self, times: int, message: str = "controller down", *, transient: bool = True
    ) -> None:
        self.refusals.extend(Refusal(message, transient) for _ in range(times))

    def move(self, native_id: str, state: State, detail: str | None = None, **logs: object) -> None:
        entry = self.jobs[native_id]
        executor_logs = [ExecutorLog(exit_code=int(str(logs.get("exit_code", 0))))]
        entry.status = BackendStatus(
            state,
            executor_logs=executor_logs if state in (State.COMPLETE, State.EXECUTOR_ERROR) else [],
            detail=detail,
        )
        self.changed.set()

    def lose(self, native_id: str) -> None:
        del self.jobs[native_id]
        self.changed.set()

    def push(self, native_id: str, state: State, detail: str | None = None) -> None:
        assert self._push is not None
        self._push.put_nowait({native_id: BackendStatus(state, detail=detail)})

    def native_of(self, job_id: str) -> str:
        (nid,) = [n for n, e in self.jobs.items() if e.job.id == job_id]
        return nid

    # -- the contract ----------------------------------------------------------------------

    async def submit(self, job: Job, ctx: SubmitContext) -> str:
        self.calls.submits.append(job.id)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refusals:
            r = self.refusals.pop(0)
            raise SubmitError(r.message, transient=r.transient)
        nid = f"{self.name}-{next(self._ids)}"
        self.jobs[nid] = FakeJob(job, ctx, BackendStatus(State.QUEUED, detail="waiting (Fake)"))
        return nid

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        self.calls.polls += 1
        out = {}
        for nid in native_ids:
            entry = self.jobs.get(nid)
            if entry is None:
                continue
            if self.autorun and entry.status.state == State.QUEUED:
                self.move(nid, State.COMPLETE)
            out[nid] = entry.status
        return out

    async def cancel(self, native_id: str) -> None:
        self.calls.cancels.append(native_id)
        if native_id in self.jobs:
            self.move(native_id, State.CANCELED, "canceled in Fake")

    async def known_ids(self) -> list[str]:
        return list(self.jobs)

    def updates(self) -> AsyncIterator[dict[str, BackendStatus]] | None:
        if self._push is None:
            return None
        return self._updates(self._push)

    async def _updates(
        self, queue: asyncio.Queue[dict[str, BackendStatus]]
    ) -> AsyncIterator[dict[str, BackendStatus]]:
        while True:
            yield await queue.get()


class RemoteFake(FakeBackend):
    """A fake that moves its jobs' data itself (it shares no filesystem)."""

    kind = "remote-fake"
    staging = "backend"
