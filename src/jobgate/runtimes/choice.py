"""Which runtime runs executors: chosen once from the settings."""

from __future__ import annotations

import logging

from jobgate.config import Settings
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.bwrap import BwrapRuntime, bwrap_available
from jobgate.runtimes.process import ProcessRuntime

log = logging.getLogger(__name__)


def make_runtime(settings: Settings) -> Runtime:
    """The configured runtime; ``auto`` picks bubblewrap where installed."""
    choice = settings.runtime
    if choice == "auto":
        choice = "bwrap" if bwrap_available() else "process"
    if choice == "bwrap":
        return BwrapRuntime(etc_dir=settings.data_dir / "sandbox-etc")
    log.warning(
        "runtime 'process': executors run UNISOLATED as this service's user "
        "(install bubblewrap or set JOBGATE_RUNTIME=bwrap for a sandbox)"
    )
    return ProcessRuntime()
