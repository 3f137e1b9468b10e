"""Per-executor resource groups: memory, CPU and process-count limits, OOM detection,
whole-tree kill.

Uses cgroup v2 when the unified hierarchy is mounted at /sys/fs/cgroup, else the v1
``memory``, ``cpu`` and ``pids`` controllers. Without a writable hierarchy the group is
inert and a memory limit falls back to ``RLIMIT_AS`` (see :meth:`ResourceGroup.wrap`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
LOST_START = 75
"""Exit status of a marked wrapper (:meth:`ResourceGroup.wrap`) that ran nothing because
its executor had been started already."""


def process_start(pid: int | str = "self") -> int | None:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
    None when it does not exist (or is a zombie): with the pid, it names one process for the
    machine's uptime, as a pid alone does not (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def owner_token(pid: int | None = None) -> str:
    """``t<start ticks>-<pid>``: this process (or ``pid``), as :func:`owner_alive` checks it."""
    pid = os.getpid() if pid is None else pid
    return f"t{process_start(pid)}-{pid}"


_OWNER = re.compile(r"(?:^|\.)t(\d+)-(\d+)$")
_LEGACY_OWNER = re.compile(r"-(\d+)$")


def owner_alive(name: str) -> bool:
    """Whether the process a name ending in :func:`owner_token` (or, as earlier versions
    named their groups, in ``-<pid>``) names still runs."""
    m = _OWNER.search(name)
    if m:
        return process_start(int(m[2])) == int(m[1])
    m = _LEGACY_OWNER.search(name)
    return m is not None and process_start(int(m[1])) is not None


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
        """Our subtree, ``<name>.<owner token>`` beside our own group: the token (pid and
        start time) lets another process tell whether we still run. (Earlier versions
        named theirs ``<name>-<pid>`` and killed every such subtree whose pid had gone:
        they leave ours, whose runs may be adopted, alone.)"""
        leaf = f"{name}.{owner_token()}"
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            # v2: a group beside our own can't hold processes if ours has children
            # with controllers enabled, so create ours under the root we can write.
            own = _own_path("") or "/"
            base = CGROUP_ROOT / own.lstrip("/") / leaf
            if _try_mkdir(base):
                for ctrl in ("+memory", "+cpu", "+pids"):  # one by one: any may be missing
                    with contextlib.suppress(OSError):
                        _write(f"{base}/cgroup.subtree_control", ctrl)
                return cls(2, {"unified": base})
            return cls(0)
        bases = {}
        for ctrl in ("memory", "cpu", "pids"):
            mount = CGROUP_ROOT / ctrl
            if not (mount / "cgroup.procs").exists():
                continue
            base = mount / _own_path(ctrl).lstrip("/") / leaf
            if _try_mkdir(base):
                bases[ctrl] = base
        return cls(1 if bases else 0, bases)

    def group(
        self,
        name: str,
        *,
        ram_bytes: int | None,
        cpu_cores: int | None,
        max_pids: int | None = None,
    ) -> ResourceGroup:
        """Create the groups of one executor, with its limits (blocking file-system work).

        ``max_pids`` caps the processes and threads the executor's tree may hold at once
        (``pids.max``); forks beyond it fail with EAGAIN."""
        dirs: list[str] = []
        memory: str | None = None
        pids: str | None = None
        for ctrl, base in self.bases.items():
            d = f"{base}/{name}"
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            except OSError:
                continue
            dirs.append(d)
            if ctrl in ("unified", "memory"):
                memory = d
            if max_pids and ctrl in ("unified", "pids"):
                try:
                    _write(f"{d}/pids.max", max_pids)
                    pids = d
                except OSError as exc:
                    log.warning("cannot set the process limit on cgroup %s: %s", d, exc)
            try:
                if self.version == 2:
                    if ram_bytes:
                        _write(f"{d}/memory.max", ram_bytes)
                        with contextlib.suppress(OSError):
                            _write(f"{d}/memory.swap.max", 0)
                    if cpu_cores:
                        _write(f"{d}/cpu.max", f"{cpu_cores * CPU_PERIOD_US} {CPU_PERIOD_US}")
                elif ctrl == "memory" and ram_bytes:
                    _write(f"{d}/memory.limit_in_bytes", ram_bytes)
                    with contextlib.suppress(OSError):
                        _write(f"{d}/memory.memsw.limit_in_bytes", ram_bytes)
                elif ctrl == "cpu" and cpu_cores:
                    _write(f"{d}/cpu.cfs_period_us", CPU_PERIOD_US)
                    _write(f"{d}/cpu.cfs_quota_us", cpu_cores * CPU_PERIOD_US)
            except OSError as exc:
                log.warning("cannot set limits on cgroup %s: %s", d, exc)
        return ResourceGroup(self.version, dirs, ram_bytes, memory, pids, max_pids)

    def sweep(self) -> int:
        """Clean up after processes of this service that died (a crash): remove their empty
        subtrees, and kill what is left in those of earlier versions (named ``-<pid>``),
        whose runs cannot be adopted.

        A dead owner's executor groups that still exist are left alone: their runs may be
        adopted (:meth:`dead_groups` lists them for whoever settles them), and a live
        owner's are its own."""
        killed = 0
        for old in self._others():
            if owner_alive(old.name):
                continue
            if _OWNER.search(old.name) is None:
                for child in (p for p in old.iterdir() if p.is_dir()):
                    killed += ResourceGroup(self.version, [str(child)], None).kill_all()
                _rmtree_cgroup(old)
            else:
                with contextlib.suppress(OSError):
                    old.rmdir()
        return killed

    def dead_groups(self, owners: set[str]) -> dict[str, list[str]]:
        """Executor group name (``<job id>-<n>``) → its directories, in the subtrees of
        those dead ``owners`` (owner tokens; all controllers)."""
        out: dict[str, list[str]] = {}
        for old in self._others():
            m = _OWNER.search(old.name)
            if m is None or f"t{m[1]}-{m[2]}" not in owners or owner_alive(old.name):
                continue
            with contextlib.suppress(OSError):
                for child in old.iterdir():
                    if child.is_dir():
                        out.setdefault(child.name, []).append(str(child))
        return out

    def remove_dead_subtrees(self) -> None:
        """Remove the dead owners' subtrees that are empty by now."""
        for old in self._others():
            if not owner_alive(old.name):
                with contextlib.suppress(OSError):
                    old.rmdir()

    def _others(self) -> list[Path]:
        """The other owners' subtrees beside ours (``jobgate.*``, ``jobgate-*``)."""
        found = []
        for base in self.bases.values():
            with contextlib.suppress(OSError):
                for pattern in ("jobgate.*", "jobgate-*"):
                    found += [p for p in base.parent.glob(pattern) if p != base and p.is_dir()]
        return found

    def adopt(self, dirs: list[str], *, ram_bytes: int | None = None) -> ResourceGroup:
        """The group of an executor another process started, from its directories (those
        that still exist); limits are not touched."""
        found = [d for d in dirs if os.path.isdir(d)]
        memory = pids = None
        for d in found:
            if self.version == 2:
                memory = pids = d
            elif d.startswith(f"{CGROUP_ROOT}/memory/"):
                memory = d
            elif d.startswith(f"{CGROUP_ROOT}/pids/"):
                pids = d
        return ResourceGroup(self.version, found, ram_bytes, memory, pids)

    def close(self) -> None:
        for base in self.bases.values():
            _rmtree_cgroup(base)


def _try_mkdir(path: Path) -> bool:
    try:
        path.mkdir(exist_ok=True)
        return True
    except OSError:
        return False


# Plain os calls on str paths: cgroup files are tiny and pathlib's text I/O costs several
# times the system call itself, for every executor.
def _write(path: str, value: object) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:  # a group with thousands of processes fills more than one read
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


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
    """The cgroups of one executor. Inert (no dirs) where cgroups are unavailable.

    All methods do blocking file-system work: the runner calls them off the event loop,
    except :meth:`kill_all` on cancel, which must act at once.
    """

    version: int
    dirs: list[str]
    ram_bytes: int | None
    memory: str | None = None
    """The directory holding the memory controller's files (OOM events), if any."""
    pids_dir: str | None = None
    """The directory whose ``pids.max`` holds ``max_pids``, if that limit is set."""
    max_pids: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def wrap(
        self, argv: list[str], *, own_uid: bool = False, marks: tuple[str, str] | None = None
    ) -> list[str]:
        """Prefix ``argv`` so the process joins the groups before it execs.

        Joining before exec (not after spawn) means no child can escape the limits. With no
        cgroups, a memory limit becomes an address-space rlimit (coarser, but enforced);
        without a pids controller, an executor with a host uid of its own (``own_uid``)
        gets its process limit as ``RLIMIT_NPROC``, which counts exactly that uid's.

        ``marks`` (``started``, ``status``): the executor's outcome is recorded there, so a
        process other than its parent can learn it. A ``sh`` stays in front of the command:
        it creates ``started`` exclusively (its pid, then the group directories, a line
        each) and runs nothing if that file exists already (another start won), then
        runs the command as its child and writes its exit status (shell convention,
        ``128 + N`` for signal ``N``) to ``status``, and exits with it. No ``status``
        after the ``sh`` ended means it was killed before the command ended.
        """
        limits = []
        if self.ram_bytes and not self.dirs:
            limits.append(f"--as={self.ram_bytes}")
        if own_uid and self.max_pids and self.pids_dir is None:
            limits.append(f"--nproc={self.max_pids}")
        if limits:
            argv = ["prlimit", *limits, "--", *argv]
        steps = [f"echo $$ > {shlex.quote(d + '/cgroup.procs')}" for d in self.dirs]
        if marks is not None:
            started, status = (shlex.quote(m) for m in marks)
            lines = " ".join(["$$", *(shlex.quote(d) for d in self.dirs)])
            steps += [
                f"set -C; {{ printf '%s\\n' {lines} > {started}; }} 2>/dev/null "
                f"|| exit {LOST_START}; set +C",
                f'"$@"; s=$?; echo $s > {status}; exit $s',
            ]
            return ["/bin/sh", "-c", "; ".join(steps), "sh", *argv]
        if self.dirs:
            return ["/bin/sh", "-c", "; ".join(steps) + '; exec "$@"', "sh", *argv]
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
                with contextlib.suppress(OSError):  # no cgroup.kill before Linux 5.14
                    _write(f"{d}/cgroup.kill", 1)
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
        if self.memory is None:
            return False
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return _counted(f"{self.memory}/{name}", "oom_kill")

    def pids_limit_hit(self) -> bool:
        """Whether a fork or clone of this group failed because of ``pids.max``."""
        if self.pids_dir is None:
            return False
        return _counted(f"{self.pids_dir}/pids.events", "max")

    def remove(self, *, patience: float = 0.0) -> None:
        """Delete the groups. A group whose killed processes are still exiting cannot be
        removed yet: retry for up to ``patience`` seconds (only off the event loop)."""
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


def _counted(path: str, key: str) -> bool:
    """Whether the ``key value`` counter file at ``path`` has counted ``key`` at least once
    (an unreadable file counts nothing)."""
    try:
        text = _read(path)
    except OSError:
        return False
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip() not in ("", "0"):
            return True
    return False
