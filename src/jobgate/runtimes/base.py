"""The runtime contract: build the host command that runs one executor."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


@dataclass(frozen=True, slots=True)
class HostCommand:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


class UnsupportedTask(ValueError):
    """The task asks for something this runtime cannot give (a SYSTEM_ERROR, with this text)."""


class Runtime(abc.ABC):
    """Turns an :class:`ExecSpec` into a host command. Implementations never spawn anything.

    Contract: the returned command, run with the given cwd and env, executes ``spec.argv``
    with every mount visible at its container path (or, for runtimes that cannot remap paths,
    under ``spec.root`` as documented by that runtime), and exits with the executor's exit
    status. It raises :class:`UnsupportedTask` for a spec it cannot honour.
    """

    name: ClassVar[str]
    isolated: ClassVar[bool]
    """Whether executors are kept from the host's files and network."""

    @abc.abstractmethod
    def command(self, spec: ExecSpec) -> HostCommand: ...

    def describe(self) -> dict[str, str]:
        """Facts for service-info and task log metadata."""
        return {"runtime": self.name, "isolated": str(self.isolated).lower()}
