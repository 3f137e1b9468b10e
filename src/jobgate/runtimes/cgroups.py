"""Per-executor resource groups: memory and CPU limits, OOM detection, whole-tree kill.

Uses cgroup v2 when the unified hierarchy is mounted at /sys/fs/cgroup, else the v1
``memory`` and ``cpu`` controllers. Without a writable hierarchy the group is inert and
limits fall back to ``RLIMIT_AS`` (see :meth:`ResourceGroup.wrap`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


def _own_path(controller: str) -> str:
    """This process's cgroup path for a v1 controller ('' for v2)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if controller in ctrls.split(","):
                return path
    except OSError:
        pass
    return "/"


@dataclass
class CgroupLayout:
    """Where this service may create groups, found once at start-up."""

    version: int  # 2, 1, or 0 for none
    bases: dict[str, Path] = field(default_factory=dict)  # controller → our parent dir

    @classmethod
    def detect(cls, name: str = "jobgate") -> CgroupLayout:
        leaf = f"{name}-{os.getpid()}"
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            # v2: a group beside our own can't hold processes if ours has children
            # with controllers enabled, so create ours under the root we can write.
            own = _own_path("") or "/"
            base = CGROUP_ROOT / own.lstrip("/") / leaf
            if _try_mkdir(base):
                with contextlib.suppress(OSError):
                    (base / "cgroup.subtree_control").write_text("+memory +cpu")
                return cls(2, {"unified": base})
            return cls(0)
        bases = {}
        for ctrl in ("memory", "cpu"):
            mount = CGROUP_ROOT / ctrl
            if not (mount / "cgroup.procs").exists():
                continue
            base = mount / _own_path(ctrl).lstrip("/") / leaf
            if _try_mkdir(base):
                bases[ctrl] = base
        return cls(1 if bases else 0, bases)

    def group(self, name: str, *, ram_bytes: int | None, cpu_cores: int | None) -> ResourceGroup:
        dirs: list[Path] = []
        for ctrl, base in self.bases.items():
            d = base / name
            if not _try_mkdir(d):
                continue
            dirs.append(d)
            try:
                if self.version == 2:
                    if ram_bytes:
                        (d / "memory.max").write_text(str(ram_bytes))
                        with contextlib.suppress(OSError):
                            (d / "memory.swap.max").write_text("0")
                    if cpu_cores:
                        (d / "cpu.max").write_text(f"{cpu_cores * CPU_PERIOD_US} {CPU_PERIOD_US}")
                elif ctrl == "memory" and ram_bytes:
                    (d / "memory.limit_in_bytes").write_text(str(ram_bytes))
                    with contextlib.suppress(OSError):
                        (d / "memory.memsw.limit_in_bytes").write_text(str(ram_bytes))
                elif ctrl == "cpu" and cpu_cores:
                    (d / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                    (d / "cpu.cfs_quota_us").write_text(str(cpu_cores * CPU_PERIOD_US))
            except OSError as exc:
                log.warning("cannot set limits on cgroup %s: %s", d, exc)
        return ResourceGroup(self.version, dirs, ram_bytes)

    def sweep(self) -> int:
        """Kill processes left in groups of earlier runs of this service (after a crash)."""
        killed = 0
        for base in self.bases.values():
            parent = base.parent
            for old in parent.glob("jobgate-*"):
                if old == base or not old.is_dir() or _owner_alive(old):
                    continue  # another jobgate on this host still runs: its tasks are its own
                for child in (p for p in old.iterdir() if p.is_dir()):
                    killed += ResourceGroup(self.version, [child], None).kill_all()
                _rmtree_cgroup(old)
        return killed

    def close(self) -> None:
        for base in self.bases.values():
            _rmtree_cgroup(base)


def _owner_alive(group: Path) -> bool:
    """Whether the jobgate process that made ``group`` (named ``jobgate-<pid>``) still runs."""
    try:
        return psutil.Process(int(group.name.rsplit("-", 1)[1])).status() != psutil.STATUS_ZOMBIE
    except (ValueError, IndexError, psutil.Error):
        return False


def _try_mkdir(path: Path) -> bool:
    try:
        path.mkdir(exist_ok=True)
        return True
    except OSError:
        return False


def _rmtree_cgroup(path: Path) -> None:
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir():
            _rmtree_cgroup(child)
    with contextlib.suppress(OSError):
        path.rmdir()


@dataclass
class ResourceGroup:
    """The cgroups of one executor. Inert (no dirs) where cgroups are unavailable."""

    version: int
    dirs: list[Path]
    ram_bytes: int | None

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def wrap(self, argv: list[str]) -> list[str]:
        """Prefix ``argv`` so the process joins the groups before it execs.

        Joining before exec (not after spawn) means no child can escape the limits. With no
        cgroups, a memory limit becomes an address-space rlimit (coarser, but enforced).
        """
        if self.dirs:
            joins = "; ".join(
                f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs
            )
            return ["/bin/sh", "-c", joins + '; exec "$@"', "sh", *argv]
        if self.ram_bytes:
            return ["prlimit", f"--as={self.ram_bytes}", "--", *argv]
        return argv

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return found

    def kill_all(self) -> int:
        """SIGKILL every process in the groups (a whole tree, wherever it moved itself)."""
        n = 0
        for d in self.dirs:
            kill_file = d / "cgroup.kill"
            if self.version == 2 and kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
        # Repeat: a process may fork while we kill its siblings.
        for _ in range(10):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    n += 1
        return n

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this group for exceeding its memory."""
        for d in self.dirs:
            try:
                if self.version == 2:
                    text = (d / "memory.events").read_text()
                elif (d / "memory.oom_control").exists():
                    text = (d / "memory.oom_control").read_text()
                else:
                    continue
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip() not in ("", "0"):
                    return True
        return False

    def remove(self) -> None:
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()
