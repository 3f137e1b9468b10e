"""Host directories an administrator shows in every task, at their own path.

``JOBGATE_HOST_MOUNTS=/gpfs:rw,/opt/venvs:ro`` binds ``/gpfs`` read-write and ``/opt/venvs``
read-only into every executor (bwrap, containers; the process runtime sees the host
anyway). Workflow engines need this: their workers run from the host's Python environment
and exchange files with the leader through a directory both see. Only listed directories
are shown, never a path a user chooses.

A ``file://`` input whose URL path is its container path, under a host mount, is already
where the task will look: it is bound (by the mount), not copied; likewise an output
under a read-write mount needs no copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

# Where the sandbox provides its own file systems: never a host mount (nor "/" or /tmp
# itself, which every task has of its own; a directory under /tmp may be one).
FORBIDDEN = ("/proc", "/dev", "/sys")


@dataclass(frozen=True, slots=True)
class HostMount:
    """A host directory shown to every executor at the same path."""

    path: str
    """Absolute, normalised (no trailing ``/``, no ``..``)."""
    writable: bool = False


def parse_host_mounts(value: str) -> tuple[HostMount, ...]:
    """``/a:rw,/b:ro,/c`` (no mode: read-only) → mounts; raises ValueError naming a bad entry."""
    mounts: list[HostMount] = []
    for raw in (p.strip() for p in value.split(",")):
        if not raw:
            continue
        path, sep, mode = raw.rpartition(":")
        if not sep:
            path, mode = raw, "ro"
        if mode not in ("rw", "ro"):
            raise ValueError(f"host mount {raw!r}: the mode must be rw or ro, not {mode!r}")
        mounts.append(checked(HostMount(path, mode == "rw")))
    seen = [m.path for m in mounts]
    if len(set(seen)) != len(seen):
        raise ValueError(f"host mounts list a directory twice: {seen}")
    return tuple(mounts)


def checked(mount: HostMount) -> HostMount:
    """``mount`` if its path may be a host mount; else ValueError saying why."""
    path = mount.path.rstrip("/") or "/"
    if not path.startswith("/") or os.path.normpath(path) != path or "//" in mount.path:
        raise ValueError(f"host mount {mount.path!r}: must be an absolute path without '..'")
    if path in ("/", "/tmp") or any(inside(path, f) for f in FORBIDDEN):
        raise ValueError(
            f"host mount {mount.path!r}: not /, /tmp, nor under {', '.join(FORBIDDEN)}, "
            "which every sandbox provides itself"
        )
    return HostMount(path, mount.writable)


def inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def covering(mounts: Iterable[HostMount], path: str, *, writable: bool) -> HostMount | None:
    """The mount ``path`` lies in (read-write ones only when ``writable``), if any."""
    for m in mounts:
        if inside(path, m.path) and (m.writable or not writable):
            return m
    return None


def in_place(mounts: Iterable[HostMount], url: str | None, path: str, *, writable: bool) -> bool:
    """Whether ``url`` is a ``file://`` URL naming exactly ``path`` under one of ``mounts``
    (read-write ones when ``writable``): the task sees it there without any copy."""
    if not url or not url.startswith("file:"):
        return False
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        return False
    local = unquote(parts.path)
    norm = path.rstrip("/") or "/"
    if local.rstrip("/") != norm or os.path.normpath(norm) != norm:
        return False
    return covering(mounts, norm, writable=writable) is not None
