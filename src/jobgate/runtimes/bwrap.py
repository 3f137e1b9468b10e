"""bubblewrap: a private root built from read-only host system dirs plus the task's dirs.

Each executor gets the absolute paths it asked for (``/data/file1``) with no image and no
host write access outside its task directory; PID and network namespaces are private.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from jobgate.runtimes.base import DEFAULT_PATH, ExecSpec, HostCommand, Runtime, UnsupportedTask

# Host directories shown read-only; a task may not place its own files inside them.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
RESERVED = (*SYSTEM_DIRS, "/proc", "/dev")


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


class BwrapRuntime(Runtime):
    name: ClassVar[str] = "bwrap"
    isolated: ClassVar[bool] = True

    def __init__(self, executable: str | None = None, *, network: bool = False) -> None:
        found = executable or shutil.which("bwrap")
        if not found:
            raise FileNotFoundError("bubblewrap (bwrap) is not installed")
        self.executable = found
        self.network = network

    def command(self, spec: ExecSpec) -> HostCommand:
        argv = [self.executable]
        for d in SYSTEM_DIRS:
            argv += ["--ro-bind-try", d, d]
        argv += ["--dev", "/dev", "--proc", "/proc"]
        # Top-level entries of the task root become top-level dirs of the sandbox.
        for entry in sorted(spec.root.iterdir()) if spec.root.exists() else []:
            target = "/" + entry.name
            if any(_inside(target, r) for r in RESERVED):
                raise UnsupportedTask(
                    f"the bwrap runtime cannot place task paths under {target}: "
                    "it shows the host's system directories there read-only"
                )
            argv += ["--bind", str(entry), target]
        for m in spec.mounts:
            if any(_inside(m.container, r) for r in RESERVED):
                raise UnsupportedTask(f"the bwrap runtime cannot mount at {m.container}")
            argv += ["--ro-bind" if m.readonly else "--bind", str(m.host), m.container]
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
        argv += ["--new-session"]
        if not self.network:
            argv.append("--unshare-net")
        argv += ["--clearenv", "--setenv", "PATH", DEFAULT_PATH, "--setenv", "HOME", "/tmp"]
        for k, v in spec.env.items():
            argv += ["--setenv", k, v]
        argv += ["--chdir", spec.workdir or "/"]
        argv += ["--", *spec.argv]
        return HostCommand(argv=argv, cwd=spec.root, env={"PATH": DEFAULT_PATH})


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None


__all__ = ["BwrapRuntime", "Path", "bwrap_available"]
