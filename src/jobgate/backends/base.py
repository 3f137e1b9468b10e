"""The backend contract shared by every compute system jobgate drives.

What the dispatcher guarantees a backend, and what a backend guarantees in return:

- **Submission.** ``submit(job, ctx)`` is called at most once per claim of a job. Where
  the backend declares ``staging = "gateway"``, the gateway has staged every input into
  ``ctx.taskdir`` (on a filesystem the backend shares; :attr:`Backend.task_root`) and
  stages the outputs from there after the final status. Where it declares ``"backend"``,
  ``ctx.taskdir`` is None: the backend receives the job's input/output URLs and contents
  (``job.inputs``/``job.outputs``) and moves the data itself.
- **Ownership.** Returning a native id means the backend owns the job: it answers for it
  in :meth:`Backend.poll` until a final status has been reported and :meth:`Backend.forget`
  was called. Raising :class:`SubmitError` means it does not have the job. With
  ``transient=True`` the dispatcher puts the job back in the gateway's queue (QUEUED, the
  reason in its detail) and tries again with capped exponential backoff and jitter, for
  up to :attr:`Backend.submit_patience` seconds since the first such failure; after that
  (or on a non-transient error) the job is SYSTEM_ERROR. A backend must therefore never
  raise a transient error when the job may exist (a lost reply): it resolves that itself
  (look the job up by name) before it answers.
- **Status.** :meth:`Backend.poll` answers many ids in one call; :class:`BackendStatus`
  says INITIALIZING (the backend prepares the job: it fetches inputs, pulls an image),
  QUEUED (waiting in the backend's own queue, with its reason in ``detail``), RUNNING,
  or a final state with the executor logs. A job moves between the first three as the
  backend says, but never back to INITIALIZING once it ran. An id the backend does not
  know is omitted (the job is then SYSTEM_ERROR). A backend that cannot reach its system
  right now repeats the last state it saw (the job waits), never a final one.
- **Push.** A backend that is notified (message queues, watches) sets :attr:`changed`
  (the dispatcher polls at once) or implements :meth:`Backend.updates`.
- **Restarts.** After a gateway restart :meth:`Backend.reattach` says which jobs of an
  earlier run it still holds; those are adopted by native id and never submitted again.
- **Logs.** :meth:`Backend.open_log` reads an executor's stdout/stderr while the job runs;
  the dispatcher keeps the complete logs before it records the final state.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from jobgate.domain.models import ExecutorLog, Job, JobRecord, OutputFileLog
from jobgate.domain.states import FINAL, State
from jobgate.runner.logfiles import Stream, open_live
from jobgate.runner.taskdir import TaskDir

Staging = Literal["gateway", "backend"]
"""Who moves a job's data: the gateway (into a task directory the backend shares), or the
backend (it receives the URLs)."""

STATUS_STATES: frozenset[State] = (
    frozenset({State.INITIALIZING, State.QUEUED, State.RUNNING}) | FINAL
)
"""The states a :class:`BackendStatus` may carry."""


@dataclass
class BackendStatus:
    """What a backend knows of one of its jobs.

    ``state`` is INITIALIZING while the backend prepares the job (stages its inputs),
    QUEUED while it waits in the backend's own queue, RUNNING while it runs, then one of
    COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED or PREEMPTED. Final statuses carry
    the executor logs; ``detail`` is shown to users as the job's detail (e.g. the
    scheduler's state and reason, ``Slurm: PENDING (Priority)``).
    """

    state: State
    executor_logs: list[ExecutorLog] = field(default_factory=list)
    system_logs: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    detail: str | None = None
    outputs: list[OutputFileLog] = field(default_factory=list)
    """Outputs the backend uploaded itself (``staging = "backend"``), for the task log."""
    never_ran: bool = False
    """With SYSTEM_ERROR: the backend lost the job before it ever ran, so the gateway may
    submit it again (once more, or elsewhere) without running anything twice."""

    def __post_init__(self) -> None:
        if self.state not in STATUS_STATES:
            raise ValueError(f"a backend cannot report {self.state}")


class SubmitError(Exception):
    """The backend refused a job. ``transient`` says whether retrying later may succeed
    (the backend is briefly unreachable or busy); the job then waits in the gateway."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class SubmitContext:
    """What a backend receives with a job besides its spec."""

    attempt: int
    """1 for the first run of the job, 2 after a restart or reschedule ran it again…"""
    taskdir: TaskDir | None = None
    """The staged task directory (backends with ``staging = "gateway"`` only)."""
    credential: str | None = field(default=None, repr=False)
    """The submitter's bearer token, for a backend that acts on the submitter's behalf
    (``JOBGATE_CREDENTIAL_BACKENDS``); None otherwise. Never log it."""


class LogReader(Protocol):
    """One executor stream of a running job, read from where the last read stopped."""

    async def read(self, size: int) -> bytes:
        """Up to ``size`` new bytes; ``b""`` when nothing new has been written yet."""
        ...

    def close(self) -> None: ...


class FileLogReader:
    """A :class:`LogReader` over an open local file descriptor (it stays valid when the
    file is moved or unlinked, so a reader never loses the tail)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def read(self, size: int) -> bytes:
        # Local files: a read of at most ``size`` bytes does not stall the loop.
        return os.read(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)


class Backend(abc.ABC):
    """A compute system the dispatcher hands jobs to (see the module docstring).

    Implementations must be safe to call from one event loop; they never block it.
    """

    name: str
    """The name jobs route by (``local``, ``slurm``, or one a config file gives)."""
    kind: ClassVar[str] = "local"
    """The config file's ``type`` of this backend."""
    staging: ClassVar[Staging] = "gateway"
    submitted_state: ClassVar[State] = State.RUNNING
    """The state a job is recorded in once :meth:`submit` returned: RUNNING where the
    backend starts it at once, QUEUED where it queues work (the first poll says more)."""
    slots: int | None = None
    """Capacity in CPU slots, or None when the backend queues work itself (Slurm …)."""
    task_root: Path | None = None
    """Where this backend's task directories live (None: the gateway's jobs dir); a
    cluster backend points this at a filesystem its nodes share."""
    wants_credential: bool = False
    """Whether :attr:`SubmitContext.credential` is filled (``JOBGATE_CREDENTIAL_BACKENDS``)."""
    credentials: Callable[[str], Awaitable[str | None]] | None = None
    """Job id → the submitter's token, set by the dispatcher on backends that want
    credentials: for acting on a job of an earlier run (reattach) as its submitter."""
    zones: frozenset[str] = frozenset()
    """``resources.zones`` values that name this backend (besides its name)."""
    submit_patience: float = 600.0
    """Seconds transient submit errors are retried before the job is SYSTEM_ERROR."""
    min_poll_interval: float = 0.0
    """Seconds between two polls at least, however often :attr:`changed` is set (a
    scheduler's controller should not be asked about its queue many times a second)."""
    parameter_keys: ClassVar[frozenset[str]] = frozenset()
    """resources.backend_parameters keys this backend understands (besides ``backend``)."""
    reattach_always: ClassVar[bool] = False
    """:meth:`reattach` is called at recovery even when no job is active on this backend
    (it cleans up after runs of jobs that are no longer active)."""

    def fetched_by_backend(self, job: Job) -> frozenset[str]:
        """Container paths of ``job``'s inputs this backend fetches itself although it
        stages in the gateway (``staging = "gateway"``): the gateway leaves them out of
        its stage-in. Asked before :meth:`submit`; the default: none."""
        return frozenset()

    def job_socket(self, job: Job) -> str | None:
        """Where ``job``'s executors reach the gateway's job socket (heartbeats without
        network), or None where this backend does not show it to them. Asked before
        :meth:`submit`; what it answers must hold for that submission."""
        return None

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        """Set by the backend when a poll would see news; the dispatcher polls at once."""

    def cost(self, job: Job) -> int:
        """Slots ``job`` occupies while it runs (only meaningful when ``slots`` is set)."""
        return 1

    @abc.abstractmethod
    async def submit(self, job: Job, ctx: SubmitContext) -> str:
        """Hand ``job`` to the backend; return the backend's id for it (unique among the
        jobs it holds). Raises :class:`SubmitError` (see the module docstring)."""

    @abc.abstractmethod
    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        """Statuses of many jobs in one call. Ids the backend does not know are omitted."""

    @abc.abstractmethod
    async def cancel(self, native_id: str) -> None:
        """Ask the backend to stop a job; its final status (CANCELED) comes through poll."""

    @abc.abstractmethod
    async def known_ids(self) -> list[str]:
        """Ids of all jobs the backend still knows (for reconciliation after a restart)."""

    def updates(self) -> AsyncIterator[dict[str, BackendStatus]] | None:
        """Status updates the backend is told of (native id → status), for backends that
        are notified; None (the default) when the dispatcher must poll. The dispatcher
        consumes it for the backend's life; polling continues as a safety net."""
        return None

    def leave_alone(self, job_ids: Collection[str]) -> None:
        """Called before :meth:`reattach` with the jobs active on this backend that other,
        live, dispatchers drive: reattach must neither adopt nor clean up their work.
        Backends whose reattach cleans up nothing need not care (the default ignores it)."""
        return None

    async def reattach(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """After a gateway restart: job id → native id of those of ``records`` (jobs an
        earlier run left active on this backend: all of them) whose work the backend
        still holds; the dispatcher adopts these and runs the others again."""
        known = set(await self.known_ids())
        return {r.id: r.native_id for r in records if r.native_id and r.native_id in known}

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        """Errors (key → what is wrong) in backend_parameters values this backend uses."""
        return {}

    async def open_log(
        self, job: Job, native_id: str | None, executor: int, stream: Stream
    ) -> LogReader | None:
        """Executor ``executor``'s ``stream`` of a running job, or None if there is none
        yet. The default reads the task directory (backends staging in the gateway)."""
        if self.task_root is None or self.staging != "gateway":
            return None
        fd = open_live(TaskDir(self.task_root / job.id), job.executors[executor], executor, stream)
        return None if fd is None else FileLogReader(fd)

    def healthy(self) -> bool:
        """False while the backend knows it cannot reach its system (routing skips it)."""
        return True

    def forget(self, native_id: str) -> None:  # noqa: B027 - optional hook
        """The dispatcher has recorded the final status; state may be dropped."""

    def native_metadata(self, native_id: str) -> dict[str, str]:
        """Task log metadata naming the backend's id for a job (shown while it runs)."""
        return {}

    def describe(self) -> dict[str, str]:
        """Facts for service-info and each task's log metadata."""
        return {"backend": self.name}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; running jobs may be left to recovery."""
