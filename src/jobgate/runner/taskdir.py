"""A task's directory on the host and the mapping of container paths onto it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import WILDCARDS, Job


class PathEscape(ValueError):
    """A container path resolves outside the task root (``..`` or a symlink)."""


@dataclass(frozen=True)
class TaskDir:
    """``base/root`` holds the task's filesystem; ``base/logs`` the captured stdout/stderr."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    def host(self, container_path: str) -> Path:
        """The host path behind ``container_path``; raises :class:`PathEscape` if it leaves
        the task root once symlinks are resolved."""
        root = self.root.resolve()
        candidate = (root / container_path.lstrip("/")).resolve()
        if candidate != root and not candidate.is_relative_to(root):
            raise PathEscape(f"{container_path} resolves outside the task's directory")
        return candidate

    def prepare(self, job: Job) -> None:
        """Start from an empty directory and create every directory the task names."""
        if self.base.exists():
            shutil.rmtree(self.base)
        self.root.mkdir(parents=True)
        self.logs.mkdir()
        (self.root / "tmp").mkdir(mode=0o1777)
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
        for inp in job.inputs or []:
            dirs.add(inp.path.rsplit("/", 1)[0] or "/")
        for ex in job.executors:
            if ex.workdir:
                dirs.add(ex.workdir)
            for p in (ex.stdout, ex.stderr):
                if p:
                    dirs.add(p.rsplit("/", 1)[0] or "/")
        for d in sorted(dirs):
            self.host(d).mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
