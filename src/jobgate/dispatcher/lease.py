"""This dispatcher process's lease, and the finding of dead ones.

Several dispatcher processes may share one database. Each holds a lease it renews every
third of its length; a claim records the claiming dispatcher in the job. A dispatcher is
dead when its lease has run out, or at once when it ran on this host (the same boot) and
its process is gone; its row is then removed and a live dispatcher adopts its jobs and
recovers them as after a restart (a backend still holding one is followed, never sent it
again). A dispatcher that could not renew in time stops claiming; one that finds its
row gone (others took it for dead) must stop driving at once (``on_lost``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import now
from jobgate.store.leases import DispatcherRow, Leases, lease_end

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Process:
    """Where a process runs and which one it is (a pid is reused; its start time is not)."""

    host: str
    boot_id: str
    pid: int
    pid_start: int

    @classmethod
    def this(cls) -> Process:
        return cls(socket.gethostname(), _boot_id(), os.getpid(), _start_ticks(os.getpid()) or 0)

    def here(self, row: DispatcherRow) -> bool:
        """Whether ``row`` is a process of this host's current boot."""
        return row.host == self.host and row.boot_id == self.boot_id

    @staticmethod
    def alive(row: DispatcherRow) -> bool:
        """Whether the process of ``row`` (of this host's boot) still runs."""
        started = _start_ticks(row.pid)
        return started is not None and started == row.pid_start


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


class Lease:
    """One dispatcher's lease (``seconds`` long)."""

    def __init__(self, leases: Leases, seconds: float, *, process: Process | None = None) -> None:
        self.leases = leases
        self.seconds = seconds
        self.process = process or Process.this()
        host = self.process.host[:32]
        self.id = f"{host}-{self.process.pid}-{uuid.uuid4().hex[:8]}"
        self._valid_until = 0.0  # monotonic

    @property
    def interval(self) -> float:
        """How often the lease is renewed and peers are checked."""
        return self.seconds / 3

    async def take(self) -> None:
        started = time.monotonic()
        await self.leases.register(
            DispatcherRow(
                id=self.id,
                host=self.process.host,
                boot_id=self.process.boot_id,
                pid=self.process.pid,
                pid_start=self.process.pid_start,
                started_at=now(),
                lease_until=lease_end(self.seconds),
            )
        )
        self._valid_until = started + self.seconds

    async def renew(self) -> bool:
        """Extend the lease; False when this dispatcher's row is gone."""
        started = time.monotonic()
        if not await self.leases.renew(self.id, lease_end(self.seconds)):
            return False
        self._valid_until = started + self.seconds
        return True

    def valid(self) -> bool:
        """Whether the lease surely still holds (with a margin for clocks and queries):
        claims and submissions are made only then."""
        return time.monotonic() < self._valid_until - self.seconds / 6

    async def orphans(self) -> list[str]:
        """Remove the rows of dead dispatchers, then adopt every job without a live
        dispatcher; the ids of the jobs now this dispatcher's."""
        at = now()
        dead = []
        for row in await self.leases.all():
            if row.id == self.id:
                continue
            if row.lease_until < at or (self.process.here(row) and not Process.alive(row)):
                dead.append(row)
        for gone in await self.leases.bury(dead):
            log.warning("dispatcher %s is gone: adopting its jobs", gone)
        return await self.leases.adopt(self.id)

    async def leave(self) -> None:
        await self.leases.leave(self.id)
