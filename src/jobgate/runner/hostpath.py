"""Where a container path of a task lives on the host: standard library only, shared by
:class:`~jobgate.runner.taskdir.TaskDir` and the batch node runner."""

from __future__ import annotations

import os


class PathEscape(ValueError):
    """A container path resolves outside the task root (``..`` or a symlink)."""


def host_path(root: str, container_path: str) -> str:
    """The host path behind ``container_path`` under ``root`` (itself already resolved);
    raises :class:`PathEscape` if it leaves ``root`` once symlinks are resolved."""
    candidate = os.path.realpath(os.path.join(root, container_path.lstrip("/")))
    if candidate != root and not candidate.startswith(root.rstrip("/") + "/"):
        raise PathEscape(f"{container_path} resolves outside the task's directory")
    return candidate
