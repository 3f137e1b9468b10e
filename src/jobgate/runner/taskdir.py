"""A task's directory on the host and the mapping of container paths onto it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import WILDCARDS, Job


class PathEscape(ValueError):
    """A container path resolves outside the task root (``..`` or a symlink)."""


@dataclass(frozen=True)
class TaskDir:
    """``base/root`` holds the task's filesystem; ``base/<n>.stdout`` and ``base/<n>.stderr``
    the captured output of executor ``n`` (when the executor names no file of its own)."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    def log_file(self, index: int, stream: str) -> Path:
        """Where executor ``index``'s ``stream`` ("stdout" or "stderr") is captured."""
        return self.base / f"{index}.{stream}"

    def host(self, container_path: str) -> Path:
        """The host path behind ``container_path``; raises :class:`PathEscape` if it leaves
        the task root once symlinks are resolved."""
        return _host(self.root.resolve(), container_path)

    def prepare(self, job: Job) -> None:
        """Start from an empty directory and create every directory the task names."""
        # Plain os calls: this runs for every task, and pathlib costs more than the syscalls.
        base = str(self.base)
        try:
            os.mkdir(base)
        except FileExistsError:
            shutil.rmtree(base)
            os.mkdir(base)
        except FileNotFoundError:
            os.makedirs(base)
        # Three directories, no more: every mkdir and rmdir costs ~0.1 ms on ext4.
        os.mkdir(f"{base}/root")
        os.mkdir(f"{base}/root/tmp", 0o1777)
        dirs = _named_dirs(job)
        if not dirs:
            return
        root = self.root.resolve()
        for d in sorted(dirs):
            _host(root, d).mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        """Delete the task's directory (whatever the task left in it)."""
        try:
            self._remove_empty_layout()
        except OSError:
            shutil.rmtree(self.base, ignore_errors=True)

    def _remove_empty_layout(self) -> None:
        # Most tasks leave only their log files: a handful of syscalls, where rmtree's
        # fd-safe walk costs several times more. Anything else fails here (ENOTEMPTY,
        # EISDIR, ...) and falls back to rmtree.
        base = str(self.base)
        with os.scandir(base) as entries:
            for entry in entries:
                if entry.name != "root":
                    os.unlink(entry.path)
        os.rmdir(f"{base}/root/tmp")
        os.rmdir(f"{base}/root")
        os.rmdir(base)


def _host(root: Path, container_path: str) -> Path:
    candidate = (root / container_path.lstrip("/")).resolve()
    if candidate != root and not candidate.is_relative_to(root):
        raise PathEscape(f"{container_path} resolves outside the task's directory")
    return candidate


def _named_dirs(job: Job, *, input_parents: bool = True) -> set[str]:
    """Container directories the task names: volumes, parents of inputs, outputs, stdio."""
    dirs: set[str] = set(job.volumes or [])
    for out in job.outputs or []:
        # A wildcard output names a directory somewhere up its path; create up to it.
        parent = out.path.rsplit("/", 1)[0] or "/"
        if not out.has_wildcards:
            dirs.add(parent if out.type != "DIRECTORY" else out.path)
        else:
            # Without it a sandbox has no /data/w to write into and the matches vanish.
            fixed = []
            for part in out.path.split("/")[:-1]:
                if any(c in WILDCARDS for c in part):
                    break
                fixed.append(part)
            dirs.add("/".join(fixed) or "/")
    for inp in job.inputs if input_parents and job.inputs else []:
        dirs.add(inp.path.rsplit("/", 1)[0] or "/")
    for ex in job.executors:
        if ex.workdir:
            dirs.add(ex.workdir)
        for p in (ex.stdout, ex.stderr):
            if p:
                dirs.add(p.rsplit("/", 1)[0] or "/")
    return dirs


def container_paths(job: Job) -> tuple[str, ...]:
    """The paths a container binds from the task root: every path the task names (inputs
    themselves, output and stdio directories, volumes, workdirs), none inside another.

    Inputs are bound as themselves, not their directories, so an input at
    ``/etc/app.conf`` leaves the image's ``/etc`` in place."""
    named = _named_dirs(job, input_parents=False) | {inp.path for inp in job.inputs or []}
    kept: list[str] = []
    for path in sorted(p.rstrip("/") or "/" for p in named):
        if not any(path == k or path.startswith(k + "/") or k == "/" for k in kept):
            kept.append(path)
    return tuple(kept)
