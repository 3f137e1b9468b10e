"""The Pulsar backend: each TES task becomes one job of a Galaxy Pulsar server's manager.

The gateway stages the task's inputs into its task directory as for any backend; the
backend sends that directory (one tar, with the executors' script, :mod:`.script`) to
Pulsar, submits the script as the job's command line, and, once Pulsar says
``complete``, downloads the script's result tar (exit codes, logs, output files) into
the same task directory, from which the gateway uploads the outputs. Nothing a user
sends makes the backend contact another address: all of its traffic goes to the
configured Pulsar server (and message queue).

With remote staging (``remote_schemes``), inputs at URLs of those schemes are fetched by
the Pulsar server itself (its ``remote_transfer`` setup actions, run while the job is
``preprocessing``: INITIALIZING here) instead of through the gateway; the gateway's
staging guard must allow each such URL's host first, as if the gateway fetched it.

The Pulsar job id is ``<job id>-<attempt>``: a lost reply is resolved by asking Pulsar
about that id before setting the job up again, and after a gateway restart a job Pulsar
still holds is adopted by it (never submitted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import tarfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobgate.backends.base import (
    Backend,
    BackendStatus,
    LogReader,
    SubmitContext,
    SubmitError,
)
from jobgate.backends.pulsar import script
from jobgate.backends.pulsar.client import PulsarClient, PulsarError
from jobgate.backends.pulsar.states import ACTIVE, mapped
from jobgate.domain.models import ExecutorLog, FileType, Input, Job, JobRecord
from jobgate.domain.states import State
from jobgate.runner.logfiles import Stream
from jobgate.runner.taskdir import TaskDir
from jobgate.staging import tarball
from jobgate.staging.guard import Guard, Refused
from jobgate.staging.tarball import ExtractLimits, TarballRefused
from jobgate.staging.urls import redact, scheme_of

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
TIME = re.compile(r"[1-9]\d{0,7}")
RESULT_TRIES = 3
"""Downloads of a completed job's result Pulsar may refuse before the job is SYSTEM_ERROR."""
PARAMETER_KEYS = frozenset({"time", "native_specification"})
QUEUED_POLL_MAX = 2.0
"""Seconds between two status requests of a job in Pulsar's queue at most (REST)."""
REMOTE_SCHEMES = frozenset({"http", "https"})
"""URL schemes a Pulsar server fetches itself (``remote_transfer``: an HTTP GET); its other
remote actions need keys, object stores or a shared filesystem jobgate does not set up."""
FETCHED = "jobgate-fetch-{}"
"""The name in the Pulsar job's inputs directory of the n-th input Pulsar fetches."""


@dataclass(frozen=True, slots=True)
class PulsarConfig:
    """What one Pulsar backend needs (built by the ``pulsar`` kind)."""

    url: str
    private_token: str | None
    manager: str
    task_root: Path
    log_tail_bytes: int
    poll_concurrency: int = 16
    extract_limits: ExtractLimits = field(default_factory=ExtractLimits)
    """Bounds on a task's result tar (the output files it sends back)."""
    keep_remote: bool = False
    """Leave each job's directory on the Pulsar server after its final state."""
    liveness_timeout: float = 120.0
    """Seconds without a heartbeat from a job Pulsar calls running before it is lost."""
    remote_schemes: frozenset[str] = frozenset()
    """Input URL schemes the Pulsar server fetches itself (of :data:`REMOTE_SCHEMES`)."""
    guard: Guard = field(default_factory=Guard)
    """The gateway's staging guard: a URL Pulsar is told to fetch must pass it."""
    container: script.Container | None = None
    """How the Pulsar host runs executors' images (None: on the host, images recorded)."""


def submit_params(job: Job) -> tuple[dict[str, Any], list[str]]:
    """Pulsar ``submit_params`` for ``job`` (what its manager gives the cluster), and
    notes for the task's system_logs about requests no Pulsar manager takes."""
    res = job.resources
    params: dict[str, Any] = {"ncpus": job.cpu_cores}
    notes: list[str] = []
    if res is not None:
        if res.ram_gb is not None:
            params["ram_mb"] = max(1, round(res.ram_gb * 1024))
        if res.disk_gb is not None:
            params["disk_mb"] = max(1, round(res.disk_gb * 1024))
        bp = res.backend_parameters or {}
        if "time" in bp:
            params["walltime"] = int(bp["time"])
        if "native_specification" in bp:
            params["native_specification"] = bp["native_specification"]
        if res.preemptible:
            notes.append("resources.preemptible: not passed on (Pulsar has no such request)")
        if res.zones:
            notes.append("resources.zones: not passed on (a Pulsar server is one site)")
    if job.tags:
        params["tags"] = dict(job.tags)
    return params, notes


def held(status: Mapping[str, Any], *, submitted: bool = False) -> bool:
    """Whether Pulsar's status dict is that of a job it will run: an unknown id is
    ``lost``; a ``preprocessing`` one was set up and may never have been submitted, unless
    the gateway knows it ``submitted`` it (recorded its id after the submit): then Pulsar
    fetches its inputs or has its launch message queued. (Pulsar ignores a second submit
    of a job it launched, so submitting again is safe.)"""
    word = str(status.get("status"))
    return word != "lost" and (submitted or word != "preprocessing")


def _tar_task(
    taskdir: TaskDir,
    job: Job,
    dest: Path,
    heartbeat: float,
    fetched: Sequence[tuple[str, str]] = (),
    inputs_dir: str = "",
    container: script.Container | None = None,
) -> bytes | None:
    """Pack the staged task filesystem, the script and the tags into ``dest``; returns
    the tar's bytes when it is small (one request body, not a stream of chunks)."""
    body = script.render(
        job, heartbeat, fetched=fetched, inputs_dir=inputs_dir, container=container
    ).encode()
    with tarfile.open(dest, "w") as tar:
        tar.add(taskdir.root, arcname="root")
        info = tarfile.TarInfo(script.SCRIPT)
        info.size, info.mode = len(body), 0o755
        tar.addfile(info, io.BytesIO(body))
        tags = json.dumps(job.tags or {}).encode()
        info = tarfile.TarInfo("jobgate.tags.json")
        info.size = len(tags)
        tar.addfile(info, io.BytesIO(tags))
    return dest.read_bytes() if dest.stat().st_size <= CHUNK else None


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


def _read_tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            return script.tail(f.read(), limit)
    except OSError:
        return ""


class PulsarLogReader:
    """A running job's log file on the Pulsar server. Pulsar serves whole files only: the
    file is fetched again once what was fetched has been read, and served from there."""

    def __init__(self, client: PulsarClient, pid: str, name: str) -> None:
        self.client = client
        self.pid = pid
        self.name = name
        self.offset = 0
        self._buf = b""

    async def read(self, size: int) -> bytes:
        if not self._buf:
            try:
                data = await self.client.read(self.pid, self.name)
            except PulsarError:
                return b""  # not written yet, or Pulsar briefly away: nothing new
            self._buf = data[self.offset :]
        chunk, self._buf = self._buf[:size], self._buf[size:]
        self.offset += len(chunk)
        return chunk

    def close(self) -> None:
        self._buf = b""


class PulsarBackend(Backend):
    kind = "pulsar"
    staging = "gateway"
    submitted_state = State.QUEUED
    parameter_keys = PARAMETER_KEYS

    def __init__(self, config: PulsarConfig, *, name: str = "pulsar") -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.task_root = config.task_root
        self.client = PulsarClient(config.url, config.private_token, config.manager)
        self._sem = asyncio.Semaphore(config.poll_concurrency)
        self._last: dict[str, BackendStatus] = {}
        self._final: dict[str, BackendStatus] = {}
        self._beats: dict[str, tuple[bytes, float]] = {}
        """Per running Pulsar job: its last heartbeat and when it was first seen (monotonic)."""
        self._misses: dict[str, int] = {}
        """Per completed Pulsar job: failed downloads of its result so far."""
        self._notes: dict[str, list[str]] = {}
        """Per Pulsar job: what of the task's request was not passed on (system_logs)."""
        self._cleanups: set[asyncio.Task[None]] = set()
        self._tried: set[str] = set()
        self._waiting: dict[str, tuple[float, float]] = {}
        """Per job Pulsar last called queued or preprocessing: since when, and when it was
        last asked (monotonic)."""
        """Pulsar jobs this process has tried to submit (until their final state)."""

    # -- submission ------------------------------------------------------------------------

    @staticmethod
    def pulsar_id(job: Job, attempt: int) -> str:
        return f"{job.id}-{attempt}"

    @staticmethod
    def job_id(pulsar_id: str) -> str:
        return pulsar_id.rsplit("-", 1)[0]

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        errors = {}
        if "time" in params and not TIME.fullmatch(params["time"]):
            errors["time"] = f"invalid value {params['time'][:80]!r}: expected whole seconds"
        return errors

    def fetched_by_backend(self, job: Job) -> frozenset[str]:
        schemes = self.config.remote_schemes
        if not schemes:
            return frozenset()
        return frozenset(
            i.path
            for i in job.inputs or []
            if i.url and i.type != FileType.DIRECTORY and scheme_of(i.url) in schemes
        )

    async def _remote_staging(self, inputs: Sequence[Input]) -> dict[str, Any]:
        """Pulsar's ``remote_staging`` for ``inputs`` (one ``remote_transfer`` each, into
        the job's inputs directory); raises :class:`SubmitError` for a URL the gateway's
        staging guard refuses."""
        setup = []
        for n, inp in enumerate(inputs):
            url = inp.url or ""
            shown = redact(url)
            try:
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                await self.config.guard.resolve(parts.hostname or "", port)
            except (Refused, ValueError) as exc:
                raise SubmitError(f"input {shown}: {exc}") from None
            except socket.gaierror as exc:
                raise SubmitError(f"input {shown}: cannot resolve its host: {exc}") from None
            action = {
                "action_type": "remote_transfer",
                "url": url,
                "path": inp.path,
                "source": {"path": inp.path},
            }
            setup.append({"name": FETCHED.format(n), "type": "input", "action": action})
        return {"setup": setup} if setup else {}

    def _image_notes(self, job: Job) -> list[str]:
        if self.config.container is not None:
            return []
        images = sorted({ex.image for ex in job.executors if ex.image})
        if not images:
            return []
        return [
            f"executor images not used ({', '.join(images)}): Pulsar at {self.config.url} "
            "runs the executors on its host (this backend has no `container` set)"
        ]

    async def submit(self, job: Job, ctx: SubmitContext) -> str:
        if ctx.taskdir is None:
            raise SubmitError("the Pulsar backend needs a staged task directory")
        pid = self.pulsar_id(job, ctx.attempt)
        # An earlier try of this attempt may have got through with its reply lost: ask
        # first. A first try here cannot have (a gateway restart runs an interrupted
        # submission as its next attempt); after another process's try Pulsar ignores
        # the second submit of a job it launched.
        if pid in self._tried and await self._submitted(pid):
            return pid
        remote = self.fetched_by_backend(job)
        fetch = [i for i in job.inputs or [] if i.path in remote]
        staging = await self._remote_staging(fetch)
        params, notes = submit_params(job)
        notes += self._image_notes(job)
        if notes:
            self._notes[pid] = notes
        tar_path = ctx.taskdir.base / script.IN_TAR
        self._tried.add(pid)
        try:
            dirs = await self.client.setup(pid)
            small = await asyncio.to_thread(
                _tar_task,
                ctx.taskdir,
                job,
                tar_path,
                self.heartbeat(),
                [(FETCHED.format(n), inp.path) for n, inp in enumerate(fetch)],
                dirs["inputs_directory"],
                self.config.container,
            )
            body = small if small is not None else _chunks(tar_path)
            await self.client.upload(pid, script.IN_TAR, "input", body)
            command = script.command_line(dirs["working_directory"], dirs["inputs_directory"])
            await self._launch(pid, command, params, [], staging)
        except PulsarError as exc:
            if exc.transient and await self._submitted(pid):
                return pid
            if not exc.transient:
                self._tried.discard(pid)
            raise SubmitError(str(exc), transient=exc.transient) from None
        except KeyError as exc:
            raise SubmitError(f"Pulsar's setup reply lacks {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tar_path.unlink()
        if fetch:
            # Pulsar fetches them before it queues the job (its state: preprocessing).
            self._last[pid] = BackendStatus(
                State.INITIALIZING, detail=f"Pulsar: preprocessing (fetching {len(fetch)} inputs)"
            )
        else:
            self._last[pid] = BackendStatus(State.QUEUED, detail="Pulsar: submitted")
        return pid

    async def _launch(
        self,
        pid: str,
        command: str,
        params: dict[str, Any],
        env: list[dict[str, str]],
        remote_staging: dict[str, Any],
    ) -> None:
        """Start the job whose directory is set up (REST here; the queue in a subclass)."""
        await self.client.submit(
            pid, command, submit_params=params, env=env, remote_staging=remote_staging
        )

    async def _submitted(self, pid: str) -> bool:
        """Whether Pulsar holds a submitted job ``pid`` (False when it cannot say)."""
        try:
            status = await self.client.status(pid)
        except PulsarError:
            return False
        return held(status)

    # -- status ----------------------------------------------------------------------------

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        # A job waiting in Pulsar's queue (or staging) is asked about less often the
        # longer it has waited, up to QUEUED_POLL_MAX seconds: most status requests of a
        # long queue would only hear "queued" again, and Pulsar answers each one.
        now = time.monotonic()
        due, out = [], {}
        for pid in native_ids:
            last = self._last.get(pid)
            waited = self._waiting.get(pid)
            if last is not None and waited is not None and pid not in self._final:
                since, asked = waited
                if now - asked < min(QUEUED_POLL_MAX, (now - since) / 4):
                    out[pid] = last
                    continue
            due.append(pid)
        for pid, st in (await self._poll_many(due)).items():
            out[pid] = st
            if st.state in (State.INITIALIZING, State.QUEUED):
                self._waiting[pid] = (self._waiting.get(pid, (now, now))[0], now)
            else:
                self._waiting.pop(pid, None)
        return out

    async def _poll_many(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        results = await asyncio.gather(*(self._poll_one(pid) for pid in native_ids))
        return {pid: st for pid, st in zip(native_ids, results, strict=True) if st is not None}

    async def _poll_one(self, pid: str) -> BackendStatus | None:
        if pid in self._final:
            return self._final[pid]
        async with self._sem:
            try:
                return await self.on_status(pid, await self.client.status(pid))
            except PulsarError as exc:
                last = self._last.get(pid) or BackendStatus(State.QUEUED)
                return BackendStatus(
                    last.state, metadata=last.metadata, detail=f"{last.detail or ''} ({exc})"
                )

    async def on_status(self, pid: str, raw: Mapping[str, Any]) -> BackendStatus:
        """The status for Pulsar's status dict ``raw`` of ``pid`` (from a poll or a
        message), fetching the results of a completed job."""
        if pid in self._final:
            return self._final[pid]
        status = await self._status(pid, raw)
        if status.state in (State.INITIALIZING, State.QUEUED, State.RUNNING):
            self._last[pid] = status
        else:
            self._beats.pop(pid, None)
            status.system_logs[:0] = self._notes.pop(pid, [])
            self._final[pid] = status
            self._last.pop(pid, None)
        return status

    async def _status(self, pid: str, raw: Mapping[str, Any]) -> BackendStatus:
        word = str(raw.get("status"))
        state = mapped(word)
        meta = self.native_metadata(pid)
        if word == "running" and await self._stopped_beating(pid):
            await self.cancel(pid)  # should its processes be alive after all
            return BackendStatus(
                State.SYSTEM_ERROR,
                system_logs=[
                    f"Pulsar says the job is running, but its script has not written a "
                    f"heartbeat for {self.config.liveness_timeout:g}s: the job died (its "
                    "Pulsar server restarted or its node failed) and Pulsar lost it"
                ],
                metadata=meta,
                detail="Pulsar: running (lost)",
            )
        if word in ACTIVE:
            return BackendStatus(state, metadata=meta, detail=f"Pulsar: {word}")
        if word == "complete":
            return await self._results(pid, raw, meta)
        if word == "cancelled":
            return BackendStatus(State.CANCELED, metadata=meta, detail="Pulsar: cancelled")
        reason = {
            "lost": "Pulsar no longer knows the job (lost: its server restarted without it "
            "or its directory is gone)",
            "failed": "Pulsar failed the job",
        }.get(word, f"Pulsar reported an unknown state {word!r}")
        logs = [reason]
        for key in ("stderr", "job_stderr"):
            if raw.get(key):
                logs.append(f"Pulsar {key}: {str(raw[key])[-2000:]}")
        return BackendStatus(
            State.SYSTEM_ERROR, system_logs=logs, metadata=meta, detail=f"Pulsar: {word}"
        )

    def heartbeat(self) -> float:
        """Seconds between two heartbeats of a job's script."""
        return max(0.5, min(15.0, self.config.liveness_timeout / 4))

    async def _stopped_beating(self, pid: str) -> bool:
        """Whether a job Pulsar calls running has written no heartbeat for the liveness
        timeout (checked at most every heartbeat; an unreachable file is no verdict)."""
        now = time.monotonic()
        seen = self._beats.get(pid)
        if seen is not None and now - seen[1] < self.heartbeat():
            return False
        try:
            beat = await self.client.read(pid, script.ALIVE)
        except PulsarError as exc:
            if exc.status is None:
                raise  # unreachable: no verdict
            beat = b""  # not written yet, or gone (Pulsar answers 500 for a missing file)
        if seen is None or beat != seen[0]:
            self._beats[pid] = (beat, now)
            return False
        return now - seen[1] >= self.config.liveness_timeout

    async def _results(
        self, pid: str, raw: Mapping[str, Any], meta: dict[str, str]
    ) -> BackendStatus:
        base = self.config.task_root / self.job_id(pid)
        tar_path = base.parent / f"{base.name}.{script.OUT_TAR}"
        try:
            await self.client.download(pid, script.OUT_TAR, tar_path)
            text = await asyncio.to_thread(self._unpack, tar_path, base)
        except PulsarError as exc:
            # Pulsar answers 500 for a missing file: the server answering at all, a few
            # times over, means the result is not there (the script did not get to write it).
            tries = self._misses[pid] = self._misses.get(pid, 0) + 1
            if exc.status is None or (exc.transient and tries < RESULT_TRIES):
                raise
            notes = [
                f"the task's results did not come back from Pulsar: {exc}",
                f"Pulsar job exit code: {raw.get('returncode')}",
            ]
            for key in ("stdout", "stderr"):
                if raw.get(key):
                    notes.append(f"Pulsar job {key}: {str(raw[key])[-2000:]}")
            return BackendStatus(
                State.SYSTEM_ERROR, system_logs=notes, metadata=meta, detail="Pulsar: complete"
            )
        except (OSError, tarfile.TarError, TarballRefused) as exc:
            return BackendStatus(
                State.SYSTEM_ERROR,
                system_logs=[f"the task's results from Pulsar are refused: {exc}"],
                metadata=meta,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                tar_path.unlink()
        ran, end = script.parse_result(text)
        limit = self.config.log_tail_bytes
        logs: list[ExecutorLog] = [
            ExecutorLog(
                start_time=r.start,
                end_time=r.end,
                exit_code=r.exit_code,
                stdout=_read_tail(base / r.stdout, limit),
                stderr=_read_tail(base / r.stderr, limit),
            )
            for r in ran
        ]
        if end is None:
            return BackendStatus(
                State.SYSTEM_ERROR,
                executor_logs=logs,
                system_logs=["the task's script on Pulsar ended before its last executor"],
                metadata=meta,
                detail="Pulsar: complete",
            )
        return BackendStatus(State(end), executor_logs=logs, metadata=meta)

    def _unpack(self, tar_path: Path, base: Path) -> str:
        """Replace the task directory's contents (the staged inputs, no longer needed) by
        the result tar, by the gateway's rules for untrusted archives (the task wrote
        it), and return the result file's text."""
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        tarball.extract(tar_path, base, self.config.extract_limits)
        return (base / script.RESULT).read_text()

    # -- live logs -----------------------------------------------------------------------------

    async def open_log(
        self, job: Job, native_id: str | None, executor: int, stream: Stream
    ) -> LogReader | None:
        if native_id is None or not 0 <= executor < len(job.executors):
            return None
        ex = job.executors[executor]
        custom = ex.stdout if stream == "stdout" else ex.stderr
        name = script.rel(custom) if custom else f"{executor}.{stream}"
        return PulsarLogReader(self.client, native_id, name)

    # -- health -------------------------------------------------------------------------------

    async def check_health(self) -> str | None:
        """Ask the server (with the token, for the manager) whether it serves us; logs and
        returns what is wrong (None: all is well)."""
        try:
            info = await self.client.healthz()
        except PulsarError as exc:
            log.error("backend %s: %s", self.name, exc)
            return str(exc)
        log.info(
            "backend %s: Pulsar %s at %s, manager %s",
            self.name,
            info.get("version", "?"),
            self.config.url,
            self.config.manager,
        )
        return None

    def updates(self) -> AsyncIterator[dict[str, BackendStatus]] | None:
        # Polled over REST: the dispatcher's start of this iterator is the moment to say
        # whether the server is reachable and takes the token; it then ends.
        return self._check_at_start()

    async def _check_at_start(self) -> AsyncIterator[dict[str, BackendStatus]]:
        await self.check_health()
        return
        yield  # an async generator that yields nothing

    # -- cancel, restarts, cleanup ---------------------------------------------------------

    async def cancel(self, native_id: str) -> None:
        self._waiting.pop(native_id, None)  # asked at the next poll, however long it waited
        self.changed.set()
        try:
            # Pulsar kills the job's whole process tree before it answers, then records
            # it cancelled: the poll's CANCELED means the processes are gone.
            await self.client.cancel(native_id)
        except PulsarError as exc:
            log.warning("cancel of Pulsar job %s failed: %s", native_id, exc)

    async def known_ids(self) -> list[str]:
        # Pulsar lists no jobs: the ones this process has seen.
        return list(self._last)

    async def reattach(self, records: Sequence[JobRecord]) -> dict[str, str]:
        found: dict[str, str] = {}

        async def one(rec: JobRecord) -> None:
            # Without a recorded id, the job was caught while being submitted: its attempt
            # names the Pulsar job it may have become.
            pid = rec.native_id
            if not pid and rec.state == State.INITIALIZING and rec.attempt > 0:
                pid = f"{rec.id}-{rec.attempt}"
            if not pid:
                return
            async with self._sem:
                try:
                    raw = await self.client.status(pid)
                except PulsarError as exc:
                    log.warning("cannot ask Pulsar about job %s: %s", pid, exc)
                    return
            if held(raw, submitted=rec.native_id == pid):
                found[rec.id] = pid

        await asyncio.gather(*(one(r) for r in records))
        return found

    def forget(self, native_id: str) -> None:
        self._tried.discard(native_id)
        self._waiting.pop(native_id, None)
        self._final.pop(native_id, None)
        self._last.pop(native_id, None)
        self._notes.pop(native_id, None)
        self._beats.pop(native_id, None)
        self._misses.pop(native_id, None)
        if self.config.keep_remote:
            return
        task = asyncio.get_running_loop().create_task(self._clean(native_id))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _clean(self, pid: str) -> None:
        try:
            await self.client.clean(pid)
        except PulsarError as exc:
            log.warning("could not remove Pulsar job %s's directory: %s", pid, exc)

    def native_metadata(self, native_id: str) -> dict[str, str]:
        return {"pulsar_job_id": native_id}

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "pulsar_url": self.config.url,
            "pulsar_manager": self.config.manager,
        }

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=5)
        await self.client.close()
