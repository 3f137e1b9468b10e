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

import glob
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from jobgate.runtimes.base import (
    DEFAULT_PATH,
    ExecSpec,
    HostCommand,
    Runtime,
    RuntimeFailure,
    UnsupportedTask,
)
from jobgate.runtimes.images import ImageCatalog

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
# Where an image-root sandbox finds the host's setpriv, its libraries and loader.
HELPER_DIR = "/.jobgate-host"
RESERVED = (*SYSTEM_DIRS, "/etc", "/proc", "/dev", HELPER_DIR)
# Entries of an image root the sandbox makes itself (or the task provides: /tmp).
IMAGE_SKIPPED = ("proc", "dev", "sys", "tmp")
# Entries of the host's own root (``dir:/``) not shown: /etc is the sandbox's copy instead.
HOST_ROOT_SKIPPED = ("etc", "run")
NOBODY = (65534, 65534)


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


class BwrapRuntime(Runtime):
    """Executors in a bubblewrap sandbox.

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
        self._image_roots: dict[Path, list[_RootEntry]] = {}
        build_etc(etc_dir)
        # The arguments every executor shares, computed once.
        self._prefix = [
            found,
            *_system_mounts(),
            *("--ro-bind", str(etc_dir), "/etc"),
            *("--dev", "/dev", "--proc", "/proc"),
        ]
        self._flags = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if self.run_as:
            self._flags += ["--uid", str(self.run_as[0]), "--gid", str(self.run_as[1])]
        # Root drops to the task's uid inside: setpriv needs these two, then drops all.
        self._drop_flags = ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        self._drop_flags += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        tail = ["--die-with-parent", "--new-session"]
        if not network:
            tail.append("--unshare-net")
        tail += ["--clearenv", "--setenv", "PATH", DEFAULT_PATH, "--setenv", "HOME", "/tmp"]
        self._flags += tail
        self._drop_flags += tail
        self.setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
        self._helper: tuple[list[str], list[str]] | None = None

    def command(self, spec: ExecSpec) -> HostCommand:
        rootfs = self.catalog.resolve(spec.image).rootfs
        # Top-level entries of the task root become top-level dirs of the sandbox.
        try:
            names = sorted(os.listdir(spec.root))
        except FileNotFoundError:
            names = []
        spliced: set[str] = set()
        if rootfs is None:
            argv = list(self._prefix)
            reserved: tuple[str, ...] = RESERVED
        else:
            argv, reserved, spliced = self._image_prefix(rootfs, names)
        for name in names:
            target = "/" + name
            if name in spliced:
                assert rootfs is not None
                argv += _splice(str(rootfs / name), f"{spec.root}/{name}", target)
                continue
            if any(_inside(target, r) for r in reserved):
                where = "the host's system directories" if rootfs is None else "the image"
                raise UnsupportedTask(
                    f"the bwrap runtime cannot place task paths under {target}: "
                    f"it shows {where} there read-only"
                )
            argv += ["--bind", f"{spec.root}/{name}", target]
        shown = Path("/") if rootfs is None else rootfs
        own_etc = rootfs is None or rootfs.resolve() == Path("/")
        for m in spec.mounts:
            # Over a read-only system or image directory only where the mount point
            # exists there: bwrap cannot create it in a read-only bind.
            if _inside(m.container, "/etc") and own_etc:
                possible = _is_dir_in(self.etc_dir, m.container.removeprefix("/etc"))
            else:
                possible = _is_dir_in(shown, m.container)
            if any(_inside(m.container, r) for r in reserved) and not possible:
                raise UnsupportedTask(f"the bwrap runtime cannot mount at {m.container}")
            parent = os.path.dirname(m.container)
            if parent != "/" and not _is_dir_in(shown, parent):
                # bwrap would make the missing parent 0700, closed to the task's uid.
                argv += ["--perms", "0755", "--dir", parent]
            argv += ["--ro-bind" if m.readonly else "--bind", str(m.host), m.container]
        drop: list[str] = []
        if spec.run_as is not None:
            if self.setpriv is None:
                raise UnsupportedTask(
                    "the bwrap runtime cannot run executors as an unprivileged uid: "
                    "setpriv (util-linux) is not installed"
                )
            if rootfs is None:
                drop = [self.setpriv]
            else:
                binds, program = self._image_helper()
                argv += binds
                drop = list(program)
            uid, gid = spec.run_as
            drop += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
            drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
            argv += self._drop_flags
        else:
            argv += self._flags
        for k, v in spec.env.items():
            argv += ["--setenv", k, v]
        argv += ["--chdir", spec.workdir or "/"]
        argv += ["--", *drop, *spec.argv]
        return HostCommand(argv=argv, cwd=spec.root, env={"PATH": DEFAULT_PATH})

    def prepare(self, spec: ExecSpec) -> None:
        rootfs = self.catalog.resolve(spec.image).rootfs
        if rootfs is not None and not rootfs.is_dir():
            raise RuntimeFailure(f"image {spec.image!r} maps to {rootfs}, which is not a directory")

    def _image_prefix(
        self, rootfs: Path, task_names: list[str]
    ) -> tuple[list[str], tuple[str, ...], set[str]]:
        """The sandbox's start for an image root: its entries read-only, except empty
        directories the task puts its own files in; the paths the task may not use; and
        the image's directories the task's own paths go into (spliced: see
        :func:`_splice`)."""
        entries = self._image_roots.get(rootfs)
        if entries is None:
            entries = self._image_roots[rootfs] = _root_entries(rootfs)
        argv = [self.executable]
        reserved = ["/proc", "/dev"]
        if rootfs.resolve() == Path("/"):
            # The host's own root: its /etc only as the default sandbox shows it (no
            # secrets), and none of /run (service sockets).
            entries = [e for e in entries if e.name not in HOST_ROOT_SKIPPED]
            argv += ["--ro-bind", str(self.etc_dir), "/etc"]
            reserved.append("/etc")
        spliced = set()
        for e in entries:
            if e.empty and e.name in task_names:
                continue
            if e.name in task_names and e.directory:
                spliced.add(e.name)
                continue
            argv += e.args
            reserved.append("/" + e.name)
        argv += ["--dev", "/dev", "--proc", "/proc"]
        return argv, tuple(reserved), spliced

    def _image_helper(self) -> tuple[list[str], list[str]]:
        """bwrap arguments showing the host's setpriv, its libraries and loader under
        :data:`HELPER_DIR` in an image root, and the argv prefix that runs it there."""
        if self._helper is None:
            assert self.setpriv is not None
            self._helper = _helper_mounts(self.setpriv)
        return self._helper

    def describe(self) -> dict[str, str]:
        facts = super().describe()
        if self.setpriv:
            facts["uid"] = "per task"
        elif self.run_as:
            facts["uid"] = str(self.run_as[0])
        return facts


@dataclass(frozen=True, slots=True)
class _RootEntry:
    name: str
    args: list[str]
    empty: bool
    directory: bool = False


def _splice(image: str, task: str, target: str) -> list[str]:
    """bwrap arguments showing the image's directory ``image`` at ``target`` with the
    task's own paths (under ``task``) placed inside it: ``target`` is a fresh directory
    holding each image entry read-only and the task's entries read-write, down to where
    the task's path leaves the image. bwrap cannot create a mount point inside a
    read-only bind, so the image directory itself cannot be bound whole (CWL runners put
    inputs under ``/var/lib/cwl`` of a host-root image)."""
    args = ["--dir", target]
    own = set(os.listdir(task))
    with os.scandir(image) as found:
        for e in sorted(found, key=lambda e: e.name):
            if e.name in own:
                continue
            dest = f"{target}/{e.name}"
            if e.is_symlink():
                args += ["--symlink", os.readlink(e.path), dest]
            else:
                args += ["--ro-bind", e.path, dest]
    for name in sorted(own):
        src, inner, dest = f"{task}/{name}", f"{image}/{name}", f"{target}/{name}"
        if (
            os.path.isdir(src)
            and not os.path.islink(src)
            and os.path.isdir(inner)
            and not os.path.islink(inner)
            and os.listdir(inner)
        ):
            args += _splice(inner, src, dest)
        else:
            args += ["--bind", src, dest]
    return args


def _is_dir_in(root: Path, path: str) -> bool:
    """Whether ``path`` (absolute) is a directory inside the root directory ``root``."""
    return os.path.isdir(os.path.join(root, path.lstrip("/")))


def _root_entries(rootfs: Path) -> list[_RootEntry]:
    """bwrap arguments showing each top-level entry of an unpacked image root."""
    entries = []
    with os.scandir(rootfs) as found:
        for e in sorted(found, key=lambda e: e.name):
            if e.name in IMAGE_SKIPPED:
                continue
            if e.is_symlink():
                entries.append(
                    _RootEntry(e.name, ["--symlink", os.readlink(e.path), "/" + e.name], False)
                )
            elif e.is_dir():
                empty = not os.listdir(e.path)
                args = ["--ro-bind", e.path, "/" + e.name]
                entries.append(_RootEntry(e.name, args, empty, directory=True))
            else:
                entries.append(_RootEntry(e.name, ["--ro-bind", e.path, "/" + e.name], False))
    return entries


def _helper_mounts(setpriv: str) -> tuple[list[str], list[str]]:
    """Binds of ``setpriv`` and the shared objects it needs (as ``ldd`` lists them) under
    :data:`HELPER_DIR`, and the argv prefix running it through the host's own loader, so
    it works whatever libraries the image has."""
    try:
        listed = subprocess.run(
            ["ldd", setpriv], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeFailure(f"cannot list the libraries of {setpriv}: {exc}") from exc
    binds = ["--ro-bind", setpriv, f"{HELPER_DIR}/setpriv"]
    loader = ""
    for line in listed.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1:
            lib = parts[parts.index("=>") + 1]
            if lib.startswith("/"):
                binds += ["--ro-bind", lib, f"{HELPER_DIR}/lib/{os.path.basename(lib)}"]
        elif parts and parts[0].startswith("/"):
            loader = parts[0]
    if not loader:
        raise RuntimeFailure(f"cannot find the program loader of {setpriv} in: {listed}")
    binds += ["--ro-bind", loader, f"{HELPER_DIR}/ld.so"]
    prefix = [f"{HELPER_DIR}/ld.so", "--library-path", f"{HELPER_DIR}/lib"]
    return binds, [*prefix, f"{HELPER_DIR}/setpriv"]


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None


def _system_mounts() -> list[str]:
    """bwrap arguments showing the host's system dirs: a bind per real directory, and the
    host's own symlink for a merged-/usr alias (``/bin -> usr/bin``), which costs no mount."""
    args: list[str] = []
    real = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    for d in SYSTEM_DIRS:
        if d in real:
            args += ["--ro-bind", d, d]
        elif os.path.islink(d) and any(_inside(os.path.realpath(d), r) for r in real):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):  # a symlink elsewhere: show what it points to
            args += ["--ro-bind", d, d]
    return args


def build_etc(dest: Path) -> None:
    """(Re)create ``dest`` as the sandbox's /etc: copies of the :data:`ETC_ENTRIES` there are.

    Only what any host user may read is copied (``/etc/ssl/private`` is not). A symlink
    stays a symlink where its target is visible in the sandbox too (``/etc/localtime`` into
    /usr, ``ssl/certs`` hash links); elsewhere (``resolv.conf`` into /run) what it points to
    is copied. Built beside ``dest`` and renamed into place, so a reader never sees half.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Half-built or replaced copies a killed start left behind.
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    old = dest.with_name(f".{dest.name}-old-{uuid.uuid4().hex}")
    visible = tuple(
        os.path.realpath(d) for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)
    ) + tuple(f"/etc/{e}" for e in ETC_ENTRIES)
    try:
        os.chmod(fresh, 0o755)
        for entry in ETC_ENTRIES:
            _copy_entry(f"/etc/{entry}", str(fresh / entry), visible, set())
        if dest.exists():
            dest.rename(old)
        fresh.rename(dest)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _copy_entry(src: str, dst: str, visible: tuple[str, ...], seen: set[str]) -> None:
    try:
        st = os.lstat(src)
    except OSError:
        return  # missing on this host: nothing to show
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(src)
        if any(_inside(target, v) for v in visible):
            os.symlink(os.readlink(src), dst)
            return
        try:
            st = os.stat(src)
        except OSError:
            return  # dangling
        src = target
    readable = st.st_mode & stat.S_IROTH
    if stat.S_ISREG(st.st_mode) and readable:
        shutil.copyfile(src, dst)
        os.chmod(dst, stat.S_IMODE(st.st_mode) & 0o755)
    elif stat.S_ISDIR(st.st_mode) and readable and st.st_mode & stat.S_IXOTH:
        real = os.path.realpath(src)
        if real in seen:
            return  # a symlink cycle
        seen.add(real)
        os.mkdir(dst)
        with os.scandir(src) as entries:
            for e in entries:
                _copy_entry(f"{src}/{e.name}", f"{dst}/{e.name}", visible, seen)
        os.chmod(dst, 0o755)


__all__ = ["BwrapRuntime", "Path", "build_etc", "bwrap_available"]
