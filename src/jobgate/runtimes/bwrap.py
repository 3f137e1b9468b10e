"""bubblewrap: a private root built from read-only host system dirs plus the task's dirs.

Each executor gets the absolute paths it asked for (``/data/file1``) with no image and no
host write access outside its task directory; PID and network namespaces are private.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import ClassVar

from jobgate.runtimes.base import DEFAULT_PATH, ExecSpec, HostCommand, Runtime, UnsupportedTask

# Host directories shown read-only; a task may not place its own files inside them.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Only the parts of /etc programs need: never the host's secrets (shadow, ssh keys, …).
ETC_ENTRIES = (
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "mime.types",
    "protocols",
    "services",
    "os-release",
    "debian_version",
    "profile",
    "bash.bashrc",
    "environment",
    "locale.alias",
    "inputrc",
    "magic",
    "python3",
    "perl",
)
RESERVED = (*SYSTEM_DIRS, "/etc", "/proc", "/dev")
NOBODY = (65534, 65534)


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


class BwrapRuntime(Runtime):
    name: ClassVar[str] = "bwrap"
    isolated: ClassVar[bool] = True

    def __init__(
        self,
        executable: str | None = None,
        *,
        network: bool = False,
        run_as: tuple[int, int] | None = NOBODY,
    ) -> None:
        found = executable or shutil.which("bwrap")
        if not found:
            raise FileNotFoundError("bubblewrap (bwrap) is not installed")
        self.executable = found
        self.network = network
        # A service running as root gives executors an unprivileged uid inside a user
        # namespace: no capabilities, and host files it does not own stay out of reach.
        self.run_as = run_as if os.geteuid() == 0 else None

    def command(self, spec: ExecSpec) -> HostCommand:
        argv = [self.executable]
        for d in SYSTEM_DIRS:
            argv += ["--ro-bind-try", d, d]
        for e in ETC_ENTRIES:
            argv += ["--ro-bind-try", f"/etc/{e}", f"/etc/{e}"]
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
        argv += ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if self.run_as:
            argv += ["--uid", str(self.run_as[0]), "--gid", str(self.run_as[1])]
        argv += ["--die-with-parent"]
        argv += ["--new-session"]
        if not self.network:
            argv.append("--unshare-net")
        argv += ["--clearenv", "--setenv", "PATH", DEFAULT_PATH, "--setenv", "HOME", "/tmp"]
        for k, v in spec.env.items():
            argv += ["--setenv", k, v]
        argv += ["--chdir", spec.workdir or "/"]
        argv += ["--", *spec.argv]
        return HostCommand(argv=argv, cwd=spec.root, env={"PATH": DEFAULT_PATH})

    def describe(self) -> dict[str, str]:
        facts = super().describe()
        if self.run_as:
            facts["uid"] = str(self.run_as[0])
        return facts


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None


__all__ = ["BwrapRuntime", "Path", "bwrap_available"]
