"""bubblewrap: a private root built from read-only host system dirs plus the task's dirs.

Each executor gets the absolute paths it asked for (``/data/file1``) with no image and no
host write access outside its task directory; PID and network namespaces are private.

Given an unprivileged host uid to run as (``ExecSpec.run_as``: a root service always gives
one), bwrap runs as root without a user namespace (so no unprivileged user namespaces are
needed, and the task directory's host path need not be reachable by that uid) and the
sandbox's first program is ``setpriv``, which becomes that uid with no capabilities, no
supplementary groups and ``no_new_privs`` before it runs the executor: the executor is that
uid on the host, and root-owned files are as closed to it as to any other user. Without
one, bwrap makes a user namespace: a non-root service's executors are its own uid; a root
caller's (a batch node run as root) are nobody inside but still host root outside.
An image mapped to an unpacked root directory (``JOBGATE_IMAGE_MAP=alpine=dir:/srv/alpine``)
replaces the host's system dirs: the sandbox then shows that directory's entries instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import ClassVar

from jobgate.runtimes import argv as _argv
from jobgate.runtimes.argv import ETC_ENTRIES, HELPER_DIR, RESERVED, SYSTEM_DIRS, BwrapArgv
from jobgate.runtimes.base import DEFAULT_PATH, ExecSpec, HostCommand, Runtime
from jobgate.runtimes.images import ImageCatalog

NOBODY = (65534, 65534)


class BwrapRuntime(Runtime):
    """Executors in a bubblewrap sandbox (the command lines: ``argv.BwrapArgv``).

    The sandbox's ``/etc`` is one read-only bind of a copy of :data:`ETC_ENTRIES`, built
    once per runtime in ``etc_dir`` (replaced if present; a private temporary directory
    when not given): one mount instead of one per entry halves bwrap's start-up time.
    """

    name: ClassVar[str] = "bwrap"
    isolated: ClassVar[bool] = True
    runs_as_task_uid: ClassVar[bool] = True

    def __init__(
        self,
        executable: str | None = None,
        *,
        network: bool = False,
        run_as: tuple[int, int] | None = NOBODY,
        etc_dir: Path | None = None,
        catalog: ImageCatalog | None = None,
    ) -> None:
        found = executable or shutil.which("bwrap")
        if not found:
            raise FileNotFoundError("bubblewrap (bwrap) is not installed")
        self.executable = found
        self.network = network
        # A service running as root gives executors an unprivileged uid inside a user
        # namespace: no capabilities, and host files it does not own stay out of reach.
        self.run_as = run_as if os.geteuid() == 0 else None
        if etc_dir is None:
            etc_dir = Path(tempfile.mkdtemp(prefix="jobgate-bwrap-")) / "etc"
            weakref.finalize(self, shutil.rmtree, etc_dir.parent, ignore_errors=True)
        self.etc_dir = etc_dir
        self.catalog = catalog or ImageCatalog()
        build_etc(etc_dir)
        self.setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
        self._argv = BwrapArgv(
            found, network=network, run_as=self.run_as, etc_dir=str(etc_dir), setpriv=self.setpriv
        )

    def command(self, spec: ExecSpec) -> HostCommand:
        rootfs = self.catalog.resolve(spec.image).rootfs
        argv = self._argv.command(
            str(spec.root),
            spec.argv,
            rootfs=None if rootfs is None else str(rootfs),
            mounts=[(str(m.host), m.container, m.readonly) for m in spec.mounts],
            env=spec.env,
            workdir=spec.workdir,
            run_as=spec.run_as,
        )
        return HostCommand(argv=argv, cwd=spec.root, env={"PATH": DEFAULT_PATH})

    def prepare(self, spec: ExecSpec) -> None:
        rootfs = self.catalog.resolve(spec.image).rootfs
        _argv.check_rootfs(spec.image, None if rootfs is None else str(rootfs))

    def describe(self) -> dict[str, str]:
        facts = super().describe()
        if self.setpriv:
            facts["uid"] = "per task"
        elif self.run_as:
            facts["uid"] = str(self.run_as[0])
        return facts


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None


def build_etc(dest: Path) -> None:
    """(Re)create ``dest`` as the sandbox's /etc (see ``argv.build_etc``)."""
    _argv.build_etc(str(dest))


__all__ = [
    "ETC_ENTRIES",
    "HELPER_DIR",
    "RESERVED",
    "SYSTEM_DIRS",
    "BwrapRuntime",
    "Path",
    "build_etc",
    "bwrap_available",
]
