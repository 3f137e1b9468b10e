"""The settings the dispatcher uses, and only those."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    jobs_dir: Path
    """Where task directories of backends without a ``task_root`` of their own live."""
    logs_dir: Path
    """Where executors' stdout/stderr are kept once a job ended (``<job id>/<n>.stdout``)."""
    poll_interval: float = 2.0
    """Seconds between polls of a backend (and sweeps of the queue) at most."""
    max_attempts: int = 2
    """Runs of a job interrupted by gateway restarts before it is failed."""
    keep_task_dirs: bool = False
    retry_max_delay: float = 60.0
    """Longest wait between two submits of a job after transient errors."""
    stalled_fail_after: float = 0.0
    """Seconds a stalled job that is not retried stays stalled before it is failed (0: never)."""
    lease_seconds: float = 30.0
    """How long a dispatcher's lease lasts: a dead dispatcher's jobs wait at most this long
    for another to adopt them (at once when it ran on the same host)."""
