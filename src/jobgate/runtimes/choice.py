"""Which runtime runs executors: chosen once from the settings.

:func:`make_runtime` is the single entry point, for the local backend and for batch
backends that run executors on compute nodes.
"""

from __future__ import annotations

import hashlib
import logging
import socket

from jobgate.config import Settings
from jobgate.runtimes.apptainer import ApptainerRuntime
from jobgate.runtimes.base import Runtime
from jobgate.runtimes.bwrap import BwrapRuntime, bwrap_available
from jobgate.runtimes.images import ImageCatalog
from jobgate.runtimes.oci import DockerRuntime, PodmanRuntime
from jobgate.runtimes.process import ProcessRuntime

log = logging.getLogger(__name__)


def instance_id(settings: Settings) -> str:
    """Names this service's containers apart from another jobgate's on the same host."""
    key = f"{socket.gethostname()}:{settings.data_dir}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def runtime_name(settings: Settings) -> str:
    """The configured runtime's name; ``auto`` picks bubblewrap where installed."""
    if settings.runtime == "auto":
        return "bwrap" if bwrap_available() else "process"
    return settings.runtime


def make_runtime(settings: Settings) -> Runtime:
    """The configured runtime; ``auto`` picks bubblewrap where installed."""
    runtime = _make_runtime(settings)
    runtime.host_mounts = settings.host_mounts
    return runtime


def _make_runtime(settings: Settings) -> Runtime:
    choice = runtime_name(settings)
    catalog = ImageCatalog(settings.image_map, settings.image_dir)
    if choice in ("podman", "docker"):
        engine = PodmanRuntime if choice == "podman" else DockerRuntime
        return engine(
            catalog=catalog,
            instance=instance_id(settings),
            network=settings.executor_network,
            user=settings.container_user,
            ulimits=settings.container_ulimits or None,
            pull_timeout=settings.pull_timeout,
            oci_runtime=settings.podman_runtime if choice == "podman" else "",
        )
    if choice in ("apptainer", "singularity"):
        return ApptainerRuntime(
            "singularity" if choice == "singularity" else "apptainer",
            catalog=catalog,
            cache_dir=settings.data_dir / "images" / "apptainer",
            network=settings.executor_network,
            user=settings.container_user,
            pull_timeout=settings.pull_timeout,
        )
    if choice == "bwrap":
        return BwrapRuntime(
            etc_dir=settings.data_dir / "sandbox-etc",
            network=settings.executor_network,
            catalog=catalog,
        )
    log.warning(
        "runtime 'process': executors run UNISOLATED as this service's user "
        "(install bubblewrap or set JOBGATE_RUNTIME=bwrap for a sandbox)"
    )
    return ProcessRuntime()
