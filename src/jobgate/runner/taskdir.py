"""A task's directory on the host and the mapping of container paths onto it."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import WILDCARDS, Job
from jobgate.runner.hostpath import PathEscape as PathEscape
from jobgate.runner.hostpath import host_path
from jobgate.runtimes.hostmounts import HostMount, covering, in_place
from jobgate.runtimes.oci import chown_tree


@dataclass(frozen=True)
class TaskDir:
    """``base/root`` holds the task's filesystem; ``base/<n>.stdout`` and ``base/<n>.stderr``
    the captured output of executor ``n`` (when the executor names no file of its own);
    ``base/<n>.started``, ``.status`` and ``.notes`` its outcome (see :meth:`mark`). Only
    ``root`` is shown to a sandboxed task; ``base`` stays the service's."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    def log_file(self, index: int, stream: str) -> Path:
        """Where executor ``index``'s ``stream`` ("stdout" or "stderr") is captured."""
        return self.base / f"{index}.{stream}"

    def mark(self, index: int, what: str) -> str:
        """Executor ``index``'s record ``what``: ``started`` (its wrapper's pid and group
        directories, created once, before it runs), ``status`` (its exit status, after it
        ended), ``notes`` (``oom``/``pids`` lines: what its group saw, when anything)."""
        return f"{self.base}/{index}.{what}"

    def host(self, container_path: str) -> Path:
        """The host path behind ``container_path``; raises :class:`PathEscape` if it leaves
        the task root once symlinks are resolved."""
        return _host(self.root.resolve(), container_path)

    def prepare(self, job: Job, host_mounts: tuple[HostMount, ...] = ()) -> None:
        """Start from an empty directory and create every directory the task names, but
        those in ``host_mounts`` (the host's own, shown at their path)."""
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
        os.mkdir(f"{base}/root/tmp")
        os.chmod(f"{base}/root/tmp", 0o1777)  # whatever the umask (the service's is 077)
        dirs = _named_dirs(job, host_mounts=host_mounts)
        if not dirs:
            return
        root = self.root.resolve()
        for d in sorted(dirs):
            _host(root, d).mkdir(parents=True, exist_ok=True)

    def hand_over(self, uid: int, gid: int) -> None:
        """Give the task's files to the executor's unprivileged user: ``root`` and all in
        it (never following symlinks) become theirs, ``root`` mode 0700 so no other task
        uid enters it; ``base``, which keeps the service's own files (the captured logs),
        stays the service's and only traversable (0711), for runtimes that reach ``root``
        by its host path."""
        chown_tree(self.root, uid, gid)
        os.chmod(self.root, 0o700)
        os.chmod(self.base, 0o711)

    def take_back(self) -> None:
        """Make ``root`` the service's again (its top only: 0700 keeps everything below
        out of reach), so that the uid, given to a later task, cannot enter it."""
        with contextlib.suppress(FileNotFoundError):
            os.chown(self.root, os.geteuid(), os.getegid(), follow_symlinks=False)
            os.chmod(self.root, 0o700)

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
    return Path(host_path(str(root), container_path))


def misplaced(job: Job, host_mounts: tuple[HostMount, ...]) -> None:
    """Raise :class:`PathEscape` for the first input or output inside a host mount that
    is not in place there: an input must be the ``file://`` URL of its own path, an output
    that too, under a read-write mount."""
    if not host_mounts:
        return
    for what, items, writable in (
        ("input", job.inputs or [], False),
        ("output", job.outputs or [], True),
    ):
        for item in items:
            mount = covering(host_mounts, item.path, writable=False)
            if mount and not in_place(host_mounts, item.url, item.path, writable=writable):
                mode = "read-write" if mount.writable else "read-only"
                raise PathEscape(
                    f"{what} {item.path} lies in the {mode} host directory {mount.path}: "
                    f"only a file:// {what} whose URL is that same path can be there"
                    + ("" if mount.writable or what == "input" else " (and not read-only)")
                )


def in_place_inputs(job: Job, host_mounts: tuple[HostMount, ...]) -> set[str]:
    """Container paths of the inputs that are already in place in a host mount."""
    return {
        i.path for i in job.inputs or [] if in_place(host_mounts, i.url, i.path, writable=False)
    }


def in_place_outputs(job: Job, host_mounts: tuple[HostMount, ...]) -> set[str]:
    """Container paths of the outputs already in place in a read-write host mount."""
    return {
        o.path for o in job.outputs or [] if in_place(host_mounts, o.url, o.path, writable=True)
    }


def _named_dirs(
    job: Job, *, input_parents: bool = True, host_mounts: tuple[HostMount, ...] = ()
) -> set[str]:
    """Container directories the task names: volumes, parents of inputs, outputs, stdio;
    without those inside a host mount (the host's own directory is shown there)."""
    dirs = _all_named_dirs(job, input_parents=input_parents)
    return {d for d in dirs if not covering(host_mounts, d, writable=False)}


def _all_named_dirs(job: Job, *, input_parents: bool = True) -> set[str]:
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


def container_paths(job: Job, host_mounts: tuple[HostMount, ...] = ()) -> tuple[str, ...]:
    """The paths a container binds from the task root: every path the task names (inputs
    themselves, output and stdio directories, volumes, workdirs), none inside another,
    none inside a host mount (which shows the host's own files there).

    Inputs are bound as themselves, not their directories, so an input at
    ``/etc/app.conf`` leaves the image's ``/etc`` in place."""
    inputs = {i.path for i in job.inputs or [] if not covering(host_mounts, i.path, writable=False)}
    named = _named_dirs(job, input_parents=False, host_mounts=host_mounts) | inputs
    kept: list[str] = []
    for path in sorted(p.rstrip("/") or "/" for p in named):
        if not any(path == k or path.startswith(k + "/") or k == "/" for k in kept):
            kept.append(path)
    return tuple(kept)
