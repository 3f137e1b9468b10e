"""Per-executor cgroups for the batch node runner, in the standard library alone.

The same groups as ``runtimes/cgroups.py`` makes for the local backend (memory and CPU
limits, OOM detection, whole-tree kill; v2, else the v1 ``memory`` and ``cpu``
controllers, else none and a memory limit as ``RLIMIT_AS``), without its imports
(psutil, dataclasses, pathlib, logging cost more than the node runner's whole start-up
budget). The node runner sets no process limit (``pids.max``): the batch scheduler's own
job cgroup bounds the job.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time

CGROUP_ROOT = "/sys/fs/cgroup"
CPU_PERIOD_US = 100_000


def _own_path(controller: str) -> str:
    """This process's cgroup path for a v1 controller ('' for v2)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f.read().splitlines():
                _, ctrls, path = line.split(":", 2)
                if controller in ctrls.split(","):
                    return path
    except OSError:
        pass
    return "/"


def _write(path: str, value: object) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _try_write(path: str, value: object) -> None:
    with contextlib.suppress(OSError):
        _write(path, value)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _try_mkdir(path: str) -> bool:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError:
        return False
    return True


def _warn(message: str) -> None:
    # The batch job's own output (the gateway shows its tail when the runner fails).
    print(f"jobgate node runner: {message}", file=sys.stderr)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


class NodeCgroups:
    """Where this runner may create groups (``version`` 2, 1, or 0 for none)."""

    def __init__(self, version: int, bases: dict[str, str]) -> None:
        self.version = version
        self.bases = bases

    @classmethod
    def detect(cls, name: str = "jobgate") -> NodeCgroups:
        leaf = f"{name}-{os.getpid()}"
        if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):
            # v2: a group beside our own can't hold processes if ours has children with
            # controllers enabled, so ours goes under the one we are in, if writable.
            base = os.path.join(CGROUP_ROOT, (_own_path("") or "/").lstrip("/"), leaf)
            if _try_mkdir(base):
                for ctrl in ("+memory", "+cpu"):  # one by one: either may be missing
                    _try_write(f"{base}/cgroup.subtree_control", ctrl)
                return cls(2, {"unified": base})
            return cls(0, {})
        bases = {}
        for ctrl in ("memory", "cpu"):
            mount = f"{CGROUP_ROOT}/{ctrl}"
            if not os.path.exists(f"{mount}/cgroup.procs"):
                continue
            base = os.path.join(mount, _own_path(ctrl).lstrip("/"), leaf)
            if _try_mkdir(base):
                bases[ctrl] = base
        return cls(1 if bases else 0, bases)

    def group(self, name: str, *, ram_bytes: int | None, cpu_cores: int | None) -> NodeGroup:
        """Create one executor's groups with its limits."""
        dirs: list[str] = []
        memory: str | None = None
        for ctrl, base in self.bases.items():
            d = f"{base}/{name}"
            if not _try_mkdir(d):
                continue
            dirs.append(d)
            if ctrl in ("unified", "memory"):
                memory = d
            try:
                if self.version == 2:
                    if ram_bytes:
                        _write(f"{d}/memory.max", ram_bytes)
                        _try_write(f"{d}/memory.swap.max", 0)
                    if cpu_cores:
                        _write(f"{d}/cpu.max", f"{cpu_cores * CPU_PERIOD_US} {CPU_PERIOD_US}")
                elif ctrl == "memory" and ram_bytes:
                    _write(f"{d}/memory.limit_in_bytes", ram_bytes)
                    _try_write(f"{d}/memory.memsw.limit_in_bytes", ram_bytes)
                elif ctrl == "cpu" and cpu_cores:
                    _write(f"{d}/cpu.cfs_period_us", CPU_PERIOD_US)
                    _write(f"{d}/cpu.cfs_quota_us", cpu_cores * CPU_PERIOD_US)
            except OSError as exc:
                _warn(f"cannot set limits on cgroup {d}: {exc}")
        return NodeGroup(self.version, dirs, ram_bytes, memory)

    def close(self) -> None:
        for base in self.bases.values():
            _rmtree_cgroup(base)


def _rmtree_cgroup(path: str) -> None:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            _rmtree_cgroup(e.path)
    with contextlib.suppress(OSError):
        os.rmdir(path)


class NodeGroup:
    """The cgroups of one executor; inert (no dirs) where cgroups are unavailable."""

    def __init__(
        self, version: int, dirs: list[str], ram_bytes: int | None, memory: str | None
    ) -> None:
        self.version = version
        self.dirs = dirs
        self.ram_bytes = ram_bytes
        self.memory = memory

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def wrap(self, argv: list[str]) -> list[str]:
        """Prefix ``argv`` so the process joins the groups before it execs (no child can
        escape the limits); with no cgroups a memory limit becomes an address-space
        rlimit (coarser, but enforced)."""
        if self.ram_bytes and not self.dirs:
            argv = ["prlimit", f"--as={self.ram_bytes}", "--", *argv]
        if self.dirs:
            joins = "; ".join(f"echo $$ > {_quote(d + '/cgroup.procs')}" for d in self.dirs)
            return ["/bin/sh", "-c", joins + '; exec "$@"', "sh", *argv]
        return argv

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in _read(f"{d}/cgroup.procs").split())
        return found

    def kill_all(self) -> int:
        """SIGKILL every process in the groups (a whole tree, wherever it moved itself)."""
        n = 0
        if self.version == 2:
            for d in self.dirs:
                _try_write(f"{d}/cgroup.kill", 1)  # no cgroup.kill before Linux 5.14
        for _ in range(10):  # a process may fork while we kill its siblings
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    n += 1
                except (ProcessLookupError, PermissionError):
                    pass
        return n

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this group for exceeding its memory."""
        if self.memory is None:
            return False
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = _read(f"{self.memory}/{name}")
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
        return False

    def remove(self, *, patience: float = 0.0) -> None:
        """Delete the groups; one whose killed processes are still exiting is retried for
        up to ``patience`` seconds."""
        deadline = time.monotonic() + patience
        for d in self.dirs:
            while True:
                try:
                    os.rmdir(d)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                        break
                    time.sleep(0.005)
