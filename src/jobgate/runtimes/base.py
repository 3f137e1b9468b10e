"""The runtime contract: build the host command that runs one executor."""

from __future__ import annotations

import abc
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from jobgate.runtimes.errors import DEFAULT_PATH as DEFAULT_PATH
from jobgate.runtimes.errors import RuntimeFailure as RuntimeFailure
from jobgate.runtimes.errors import UnsupportedTask as UnsupportedTask
from jobgate.runtimes.hostmounts import HostMount


@dataclass(frozen=True, slots=True)
class Mount:
    """A host directory or file shown to the executor at ``container`` (an absolute path)."""

    host: Path
    container: str
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class ExecSpec:
    """One executor, resolved onto the host: what a runtime needs to build its command."""

    argv: list[str]
    image: str
    root: Path
    """The task's private root: container path ``/a/b`` lives at ``root/a/b`` on the host."""
    mounts: list[Mount]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    cpu_cores: int = 1
    ram_bytes: int | None = None
    name: str = "jobgate-executor"
    """Unique per task and executor (``jobgate-<task id>-<index>``): a container's name."""
    paths: tuple[str, ...] = ()
    """Container paths the task names (inputs, outputs, volumes, workdir, stdio), none
    inside another: what a container runtime binds from ``root``. ``/tmp`` is implied."""
    run_as: tuple[int, int] | None = None
    """The unprivileged host (uid, gid) the executor runs as, to which ``root`` has been
    handed; None: the service's own user (a non-root service) or the runtime's choice."""


@dataclass(frozen=True, slots=True)
class HostCommand:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


@dataclass(frozen=True, slots=True)
class Finished:
    """What a runtime learnt about an executor after its host command exited."""

    oom: bool = False
    """The runtime saw the executor killed for exceeding its memory limit."""


class Runtime(abc.ABC):
    """Turns an :class:`ExecSpec` into a host command. :meth:`command` never spawns anything.

    Contract: the returned command, run with the given cwd and env, executes ``spec.argv``
    with every mount visible at its container path (or, for runtimes that cannot remap paths,
    under ``spec.root`` as documented by that runtime), and exits with the executor's exit
    status. It raises :class:`UnsupportedTask` for a spec it cannot honour.

    Per executor the runner calls, off the event loop: :meth:`prepare` (may block: images),
    :meth:`command`, runs the command, then :meth:`finish` always, even after a cancel or a
    failed spawn, so nothing the runtime made outlives the executor.
    """

    name: ClassVar[str]
    isolated: ClassVar[bool]
    """Whether executors are kept from the host's files and network."""
    runs_as_task_uid: ClassVar[bool] = False
    """Honours ``ExecSpec.run_as``: a root service gives each task a uid of its own.
    Container runtimes run executors as their configured container user instead."""
    limits_itself: ClassVar[bool] = False
    """The runtime applies ``cpu_cores``/``ram_bytes`` to the executor itself (a container
    engine whose processes leave the runner's cgroup); the runner then sets none on the
    host command's group, which holds only the engine's client."""
    host_mounts: tuple[HostMount, ...] = ()
    """Host directories the site shows in every executor at their own path
    (``JOBGATE_HOST_MOUNTS``); the runner passes them in ``ExecSpec.mounts``."""

    def shared_mounts(self) -> list[Mount]:
        """:attr:`host_mounts` as mounts at their own path."""
        return [Mount(Path(m.path), m.path, readonly=not m.writable) for m in self.host_mounts]

    @abc.abstractmethod
    def command(self, spec: ExecSpec) -> HostCommand: ...

    def prepare(self, spec: ExecSpec) -> None:  # noqa: B027 - optional hook
        """Blocking set-up before :meth:`command` (fetch the image…). Raises
        :class:`RuntimeFailure` or :class:`UnsupportedTask`."""

    def finish(self, spec: ExecSpec, returncode: int | None) -> Finished:
        """Blocking clean-up after the host command exited with ``returncode`` (None: it
        never started): collect what the runtime knows (OOM) and remove whatever it made
        for ``spec`` (the container)."""
        return Finished()

    def sweep(self, keep: Collection[str] = ()) -> int:
        """Remove what earlier runs of this service left behind (after a crash), but what
        belongs to the jobs ``keep`` names (job ids: their runs may be adopted or still
        run); returns how many things were removed. Called when a backend starts and
        once it has adopted what it could."""
        return 0

    def describe(self) -> dict[str, str]:
        """Facts for service-info and task log metadata."""
        return {"runtime": self.name, "isolated": str(self.isolated).lower()}
