"""The backend contract shared by every compute system jobgate drives."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from jobgate.domain.models import ExecutorLog, Job, JobRecord
from jobgate.domain.states import State
from jobgate.runner.taskdir import TaskDir


@dataclass
class BackendStatus:
    """What a backend knows of one of its jobs.

    ``state`` is RUNNING while the job runs, then one of COMPLETE, EXECUTOR_ERROR,
    SYSTEM_ERROR, CANCELED or PREEMPTED. Final statuses carry the executor logs.
    """

    state: State
    executor_logs: list[ExecutorLog] = field(default_factory=list)
    system_logs: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    detail: str | None = None


class SubmitError(Exception):
    """The backend refused a job. ``transient`` says whether retrying later may succeed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Backend(abc.ABC):
    """A compute system. The dispatcher stages data in the gateway, then hands jobs here.

    Implementations must be safe to call from one event loop; they never block it.
    """

    name: str
    """The name jobs route by (``local``, ``slurm``, or one a config file gives)."""
    kind: ClassVar[str] = "local"
    slots: int | None = None
    """Capacity in CPU slots, or None when the backend queues work itself (Slurm …)."""
    jobs_dir: Path | None = None
    """Where this backend's task directories live (None: the gateway's ``jobs_dir``); a
    cluster backend points this at a filesystem its nodes share."""
    min_poll_interval: float = 0.0
    """Seconds between two polls at least, however often :attr:`changed` is set (a
    scheduler's controller should not be asked about its queue many times a second)."""
    parameter_keys: ClassVar[frozenset[str]] = frozenset()
    """resources.backend_parameters keys this backend understands (besides ``backend``)."""
    credentials: Callable[[str], Awaitable[str | None]] | None = None
    """Set by the app on backends in ``JOBGATE_CREDENTIAL_BACKENDS``: job id → the bearer
    token its submitter authenticated with (decrypted), for a backend that calls another
    service (a remote TES, Pulsar) on the submitter's behalf. Never log what it returns."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        """Set by the backend when a poll would see news; the dispatcher polls at once."""

    def cost(self, job: Job) -> int:
        """Slots ``job`` occupies while it runs (only meaningful when ``slots`` is set)."""
        return 1

    @abc.abstractmethod
    async def submit(self, job: Job, taskdir: TaskDir) -> str:
        """Start ``job`` in its staged ``taskdir``; return the backend's id for it.

        Raises :class:`SubmitError`. Returning means the backend owns the job: it will
        show up in :meth:`poll` until a final status has been reported.
        """

    @abc.abstractmethod
    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        """Statuses of many jobs in one call. Ids the backend does not know are omitted."""

    @abc.abstractmethod
    async def cancel(self, native_id: str) -> None:
        """Ask the backend to stop a job; its final status (CANCELED) comes through poll."""

    @abc.abstractmethod
    async def known_ids(self) -> list[str]:
        """Ids of all jobs the backend still knows (for reconciliation after a restart)."""

    async def reattach(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """After a gateway restart: job id → native id of those of ``records`` (jobs an
        earlier run left active on this backend) whose work the backend still holds; the
        dispatcher adopts these and runs the others again."""
        known = set(await self.known_ids())
        return {r.id: r.native_id for r in records if r.native_id and r.native_id in known}

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        """Errors (key → what is wrong) in backend_parameters values this backend uses."""
        return {}

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
