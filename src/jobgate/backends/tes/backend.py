"""The ``tes`` backend: each job becomes a task on a remote TES server.

- **Create** once per claim, tagged ``jobgate.job=<job id>`` and ``jobgate.gateway=<id>``.
  A create whose reply is lost is looked up by the job tag before anything else: found,
  it is adopted; absent (the remote says so), the submit is retried later; remote
  unreachable, the job keeps a placeholder id (``?<job id>``) resolved by the next polls,
  so a task is never created twice.
- **Follow** all jobs of the backend with one listing (``view=MINIMAL``, filtered on the
  gateway tag, paged, stopping once every followed id was seen) per poll, and one FULL
  read per job when it is final. 429/5xx answers back off (``Retry-After`` honoured).
  While the remote cannot be reached, jobs keep their last state; after ``lost_after``
  seconds they are SYSTEM_ERROR. A task the remote answers 404 for is SYSTEM_ERROR
  saying the remote no longer knows it; with ``resubmit_lost``, one it never reported
  RUNNING is marked ``never_ran`` instead, and the gateway submits it again.
- **Logs** of a running task: its FULL view's stdout/stderr tails, read at most once a
  second per reader (:mod:`jobgate.backends.tes.logs`).
- **Cancel** is the remote's ``:cancel``; the final state comes through polling.
- ``auth: forward`` sends the submitter's own token (carried credential) on every request
  about their task, so the remote applies its own access rules to the real user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jobgate.backends.base import Backend, BackendStatus, LogReader, SubmitContext, SubmitError
from jobgate.backends.tes.client import (
    Auth,
    RemoteNotFound,
    RemoteRefused,
    RemoteUnavailable,
    TesClient,
)
from jobgate.backends.tes.logs import RemoteLogReader
from jobgate.backends.tes.task import (
    GATEWAY_TAG,
    JOB_TAG,
    active_status,
    final_status,
    is_final,
    remote_metadata,
    remote_task,
)
from jobgate.domain.models import Job, JobRecord
from jobgate.domain.states import State
from jobgate.runner.logfiles import Stream

log = logging.getLogger(__name__)

AuthMode = Literal["none", "bearer", "basic", "forward"]
PENDING = "?"
"""Prefix of a placeholder native id: the create's reply was lost, the remote id unknown."""


@dataclass(frozen=True)
class TesConfig:
    url: str
    auth: AuthMode
    gateway: str
    """This gateway's id, tagged on every task it creates."""
    header: str | None = field(default=None, repr=False)
    """Fixed Authorization value (bearer/basic; with ``forward``: the read token, if any)."""
    zones: frozenset[str] = frozenset()
    lost_after: float = 600.0
    min_poll_interval: float = 0.5
    timeout: float = 30.0
    capacity: int | None = None
    resubmit_lost: bool = False
    """A task the remote forgets (404) before it ever ran is submitted again."""


@dataclass
class _Followed:
    job_id: str
    token: str | None
    last: BackendStatus | None = None
    started: bool = False
    """The remote reported it RUNNING (or later) once: it may have run."""


class TesBackend(Backend):
    kind = "tes"
    staging = "backend"
    submitted_state = State.QUEUED

    def __init__(self, config: TesConfig, *, name: str) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.zones = config.zones
        self.min_poll_interval = config.min_poll_interval
        self.capacity = config.capacity
        self.client = TesClient(config.url, auth=Auth(config.header), timeout=config.timeout)
        self._followed: dict[str, _Followed] = {}
        self._resolved: dict[str, str] = {}  # placeholder id → remote id
        self._unreachable_since: float | None = None

    # -- submit ------------------------------------------------------------------------

    def _token(self, ctx_credential: str | None) -> str | None:
        return ctx_credential if self.config.auth == "forward" else None

    async def submit(self, job: Job, ctx: SubmitContext) -> str:
        token = self._token(ctx.credential)
        if self.config.auth == "forward" and token is None:
            raise SubmitError(
                f"backend {self.name} forwards the submitter's credential, but this job has "
                f"none (an anonymous submitter, or {self.name} missing from "
                "JOBGATE_CREDENTIAL_BACKENDS)"
            )
        try:
            remote_id = await self.client.create(remote_task(job, self.config.gateway), token=token)
        except RemoteUnavailable as exc:
            if not exc.sent:
                self._unreachable_since = self._unreachable_since or time.monotonic()
                raise SubmitError(str(exc), transient=True) from exc
            remote_id = await self._after_lost_reply(job.id, token, exc)
        except RemoteRefused as exc:
            raise SubmitError(f"{self.config.url} refused the task: {exc}") from exc
        except RemoteNotFound as exc:
            raise SubmitError(f"{self.config.url} has no TES tasks endpoint: {exc}") from exc
        self._followed[remote_id] = _Followed(job.id, token)
        self._unreachable_since = None
        return remote_id

    async def _after_lost_reply(
        self, job_id: str, token: str | None, exc: RemoteUnavailable
    ) -> str:
        """The create may have happened: find it by its tag. Absent (asked twice): a
        transient error (safe to create again); remote unreachable: a placeholder id."""
        for wait in (0.5, 2.0):
            await asyncio.sleep(wait)
            try:
                found = await self.client.list_tagged(JOB_TAG, job_id, token=token)
            except (RemoteUnavailable, RemoteRefused, RemoteNotFound):
                continue
            if found:
                return next(iter(found))
            if wait == 2.0:
                raise SubmitError(f"{exc}; the remote has no such task", transient=True) from exc
        log.warning(
            "backend %s: create of job %s unresolved (%s); following it", self.name, job_id, exc
        )
        return PENDING + job_id

    # -- follow ------------------------------------------------------------------------

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        out: dict[str, BackendStatus] = {}
        groups: dict[str | None, list[str]] = {}
        for nid in native_ids:
            f = self._followed.get(nid)
            if f is None:
                f = self._followed[nid] = _Followed(nid.removeprefix(PENDING), None)
            groups.setdefault(f.token, []).append(nid)
        try:
            for token, ids in groups.items():
                out.update(await self._poll_group(token, ids))
        except (RemoteUnavailable, RemoteRefused) as exc:
            # A listing refused (401 after a token expired…) is no news about the tasks.
            return self._unreachable(native_ids, out, exc)
        self._unreachable_since = None
        for nid, st in out.items():
            f = self._followed[nid]
            f.last = st
            f.started = f.started or (st.state != State.QUEUED and not st.never_ran)
        return out

    async def _poll_group(self, token: str | None, ids: list[str]) -> dict[str, BackendStatus]:
        out: dict[str, BackendStatus] = {}
        real = {nid: await self._real_id(nid, token) for nid in ids}
        wanted = {r for r in real.values() if r is not None}
        states = (
            await self.client.list_tagged(
                GATEWAY_TAG, self.config.gateway, token=token, want=wanted
            )
            if wanted
            else {}
        )
        for nid, remote_id in real.items():
            if remote_id is None:
                # The lost create is not (yet) on the remote: it never reached it.
                out[nid] = self._lost(nid, "its creation never reached the remote", ran=False)
                continue
            state = states.get(remote_id)
            if state is not None and not is_final(state):
                out[nid] = active_status(state, self.name)
                continue
            try:
                task = await self.client.get(remote_id, token=token)
            except RemoteNotFound:
                out[nid] = self._lost(
                    nid,
                    f"{self.config.url} answered 404 for task {remote_id}",
                    ran=self._followed[nid].started,
                )
                continue
            except RemoteRefused as exc:
                out[nid] = self._lost(
                    nid, f"{self.config.url} refused to show task {remote_id}: {exc}"
                )
                continue
            remote_state = str(task.get("state"))
            if is_final(remote_state):
                out[nid] = final_status(task, self.name, self.config.url)
            else:
                out[nid] = active_status(remote_state, self.name)
        return out

    async def _real_id(self, nid: str, token: str | None) -> str | None:
        """The remote id of ``nid`` (a placeholder is looked up by its job tag)."""
        if not nid.startswith(PENDING):
            return nid
        if nid in self._resolved:
            return self._resolved[nid]
        found = await self.client.list_tagged(JOB_TAG, nid.removeprefix(PENDING), token=token)
        if not found:
            return None
        self._resolved[nid] = next(iter(found))
        return self._resolved[nid]

    def _lost(self, nid: str, why: str, *, ran: bool = True) -> BackendStatus:
        """SYSTEM_ERROR for a task the remote does not know; ``never_ran`` (submit it
        again) when it never ran there and ``resubmit_lost`` is set."""
        return BackendStatus(
            State.SYSTEM_ERROR,
            system_logs=[f"the remote TES server no longer knows this task: {why}"],
            detail=f"lost by {self.name}: {why}",
            never_ran=self.config.resubmit_lost and not ran,
        )

    def _unreachable(
        self, ids: Sequence[str], done: dict[str, BackendStatus], exc: Exception
    ) -> dict[str, BackendStatus]:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        waited = now - self._unreachable_since
        out = dict(done)
        for nid in ids:
            if nid in out:
                continue
            if waited >= self.config.lost_after:
                out[nid] = BackendStatus(
                    State.SYSTEM_ERROR,
                    system_logs=[
                        f"{self.config.url} could not be reached for {waited:.0f}s "
                        f"(lost_after {self.config.lost_after:g}s): {exc}"
                    ],
                    detail=f"{self.name} unreachable for {waited:.0f}s",
                )
                continue
            last = self._followed[nid].last
            state = last.state if last is not None else State.QUEUED
            out[nid] = BackendStatus(state, detail=f"{self.name} unreachable: {exc}")
        return out

    async def open_log(
        self, job: Job, native_id: str | None, executor: int, stream: Stream
    ) -> LogReader | None:
        if native_id is None:
            return None
        f = self._followed.get(native_id)
        token = f.token if f is not None else None

        async def fetch() -> dict[str, Any] | None:
            try:
                remote_id = await self._real_id(native_id, token)
                if remote_id is None:
                    return None
                return await self.client.get(remote_id, token=token)
            except (RemoteUnavailable, RemoteRefused, RemoteNotFound):
                return None  # nothing new to show; the polls report the state

        return RemoteLogReader(
            fetch, executor, stream, interval=max(1.0, self.config.min_poll_interval)
        )

    async def cancel(self, native_id: str) -> None:
        f = self._followed.get(native_id)
        token = f.token if f is not None else None
        try:
            remote_id = await self._real_id(native_id, token)
            if remote_id is not None:
                await self.client.cancel(remote_id, token=token)
        except RemoteNotFound:
            pass  # gone already: the next poll says so
        except (RemoteUnavailable, RemoteRefused) as exc:
            log.warning("backend %s: cancel of %s failed: %s", self.name, native_id, exc)

    async def known_ids(self) -> list[str]:
        found = await self.client.list_tagged(GATEWAY_TAG, self.config.gateway, token=None)
        return [i for i, s in found.items() if not is_final(s)]

    async def reattach(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """Every recorded remote id is adopted (the polls settle it, a 404 included); a
        job caught while being created is looked up by its tag, and adopted if found."""
        out: dict[str, str] = {}
        for rec in records:
            token = None
            if self.config.auth == "forward" and self.credentials is not None:
                token = await self.credentials(rec.id)
            if rec.native_id:
                # A job the gateway recorded QUEUED was never reported RUNNING.
                self._followed[rec.native_id] = _Followed(
                    rec.id, token, started=rec.state != State.QUEUED
                )
                out[rec.id] = rec.native_id
                continue
            try:
                found = await self.client.list_tagged(JOB_TAG, rec.id, token=token)
            except (RemoteUnavailable, RemoteRefused, RemoteNotFound):
                # Cannot tell: follow it under a placeholder rather than create it again.
                nid = PENDING + rec.id
                self._followed[nid] = _Followed(rec.id, token)
                out[rec.id] = nid
                continue
            if found:
                nid = next(iter(found))
                self._followed[nid] = _Followed(rec.id, token)
                out[rec.id] = nid
        return out

    def healthy(self) -> bool:
        return self._unreachable_since is None

    def forget(self, native_id: str) -> None:
        self._followed.pop(native_id, None)
        self._resolved.pop(native_id, None)

    def native_metadata(self, native_id: str) -> dict[str, str]:
        return remote_metadata(native_id, self.name, self.config.url)

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "remote": self.config.url, "auth": self.config.auth}

    async def close(self) -> None:
        log.info(
            "backend %s: %d requests sent to %s", self.name, self.client.requests, self.config.url
        )
        await self.client.close()
