"""Host uids for tasks: a root service runs each task as an unprivileged uid of its own."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections import deque
from pathlib import Path


class NoFreeUid(RuntimeError):
    """More tasks run at once than there are task uids (``JOBGATE_TASK_UID_COUNT``)."""


class TaskUids:
    """A pool of the uids ``base .. base + count - 1`` (each task's gid is its uid).

    A uid is leased to one running task at a time, so two tasks never share one: neither
    can read the other's files, signal or trace its processes. The uid free the longest
    is handed out, so a uid comes back only after all the others have been used.
    """

    def __init__(self, base: int, count: int, lock_dir: Path | None = None) -> None:
        """``lock_dir``: where each leased uid is also locked (``flock``), so that several
        dispatcher processes on one host never lease one uid at once."""
        self.base = base
        self.count = count
        self.lock_dir = lock_dir
        self._free = deque(range(base, base + count))
        self._leased: dict[int, int | None] = {}  # uid → the descriptor holding its lock

    @classmethod
    def for_service(
        cls, base: int, count: int, shared: str = "", lock_dir: Path | None = None
    ) -> TaskUids | None:
        """The pool a service needs: one when it runs as root, else None (its tasks run as
        the service's own, already unprivileged, user). ``shared`` (``UID:GID``): every
        task runs as that one user instead."""
        if os.geteuid() != 0:
            return None
        if shared:
            uid, _, gid = shared.partition(":")
            return SharedUid(int(uid), int(gid))
        return cls(base, count, lock_dir)

    def lease(self) -> tuple[int, int]:
        """A free (uid, gid); raises :class:`NoFreeUid` when all are leased."""
        for _ in range(len(self._free)):
            uid = self._free.popleft()
            held = self.hold(uid)
            if held:
                return uid, uid
            self._free.append(uid)  # another process's: try the next
        raise NoFreeUid(
            f"all {self.count} task uids are in use (JOBGATE_TASK_UID_COUNT): "
            "raise it to at least the number of tasks that may run at once"
        )

    def hold(self, uid: int) -> bool:
        """Lease ``uid`` itself (a task adopted from a process that died while it ran);
        False when another process of this host holds it."""
        fd = None
        if self.lock_dir is not None:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
        with contextlib.suppress(ValueError):
            self._free.remove(uid)
        self._leased[uid] = fd
        return True

    def claim(self, uid: int) -> None:
        """Lease ``uid`` itself: the uid of a run adopted from a dead process, which still
        owns the run's files (a uid outside the pool is left as it is)."""
        if uid in self._free:
            self.hold(uid)

    def release(self, uid: int) -> None:
        if uid in self._leased:
            fd = self._leased.pop(uid)
            if fd is not None:
                os.close(fd)  # the lock goes with it
            self._free.append(uid)

    def describe(self) -> str:
        return f"{self.base}-{self.base + self.count - 1}"


class SharedUid(TaskUids):
    """Every task runs as one user (``JOBGATE_TASK_USER``): its tasks may share files, as
    a workflow engine's leader and workers must; they are not kept from each other."""

    def __init__(self, uid: int, gid: int) -> None:
        super().__init__(uid, 0)
        self.gid = gid
        self.count = 1 << 31  # never exhausted

    def lease(self) -> tuple[int, int]:
        return self.base, self.gid

    def claim(self, uid: int) -> None:
        pass

    def release(self, uid: int) -> None:
        pass

    def describe(self) -> str:
        return f"{self.base} (every task)"
