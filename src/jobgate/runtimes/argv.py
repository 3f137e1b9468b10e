"""The host commands of the bwrap and process runtimes, built with the standard library
alone (``os``, ``stat``; no dataclasses, pathlib or typing at run time).

Both the gateway's runtimes (``bwrap.py``, ``process.py``) and the batch node runner,
which starts once per batch job and must start quickly, build their commands here: one
implementation of the sandbox. Paths are plain strings; a mount is a
``(host, container, readonly)`` triple.
"""

from __future__ import annotations

import os
import stat

from jobgate.runtimes.errors import DEFAULT_PATH, RuntimeFailure, UnsupportedTask

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    MountTriple = tuple[str, str, bool]

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
# Image map values naming an unpacked root directory, and the entry for every other image.
DIR_PREFIX = "dir:"
DEFAULT_KEY = "*"


def inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def which(name: str) -> str | None:
    """``name`` on ``$PATH`` (as ``shutil.which``, without importing shutil)."""
    if "/" in name:
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def mapped_image(image_map: Mapping[str, str], image: str) -> str:
    """What the image map makes of ``image``: its own entry, else the ``*`` entry (every
    other image), else the image itself."""
    return image_map.get(image, image_map.get(DEFAULT_KEY, image))


def image_rootfs(image_map: Mapping[str, str], image: str) -> str | None:
    """The unpacked root directory ``image`` maps to (``dir:/path``), if it does."""
    mapped = mapped_image(image_map, image)
    if not mapped.startswith(DIR_PREFIX):
        return None
    return os.path.normpath(mapped.removeprefix(DIR_PREFIX))


def check_rootfs(image: str, rootfs: str | None) -> None:
    """Raise :class:`RuntimeFailure` when ``image`` maps to a root that is no directory."""
    if rootfs is not None and not os.path.isdir(rootfs):
        raise RuntimeFailure(f"image {image!r} maps to {rootfs}, which is not a directory")


class _RootEntry:
    """One top-level entry of an image root and the bwrap arguments that show it."""

    __slots__ = ("args", "directory", "empty", "name")

    def __init__(self, name: str, args: list[str], empty: bool, directory: bool = False) -> None:
        self.name = name
        self.args = args
        self.empty = empty
        self.directory = directory


class BwrapArgv:
    """Builds bwrap command lines for one runtime configuration.

    ``etc_dir``: the sandbox's ``/etc`` (built by :func:`build_etc`); ``run_as``: the
    (uid, gid) a root caller's user namespace maps the sandbox's user to (None: bwrap's
    default); ``setpriv``: the host's setpriv, for executors run as a task uid of their own.
    """

    def __init__(
        self,
        executable: str,
        *,
        network: bool,
        run_as: tuple[int, int] | None,
        etc_dir: str,
        setpriv: str | None,
    ) -> None:
        self.executable = executable
        self.etc_dir = etc_dir
        self.setpriv = setpriv
        self._image_roots: dict[str, list[_RootEntry]] = {}
        self._helper: tuple[list[str], list[str]] | None = None
        # The arguments every executor shares, computed once.
        self._prefix = [
            executable,
            *system_mounts(),
            *("--ro-bind", etc_dir, "/etc"),
            *("--dev", "/dev", "--proc", "/proc"),
        ]
        self._flags = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if run_as:
            self._flags += ["--uid", str(run_as[0]), "--gid", str(run_as[1])]
        # Root drops to the task's uid inside: setpriv needs these two, then drops all.
        self._drop_flags = ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        self._drop_flags += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        tail = ["--die-with-parent", "--new-session"]
        if not network:
            tail.append("--unshare-net")
        tail += ["--clearenv", "--setenv", "PATH", DEFAULT_PATH, "--setenv", "HOME", "/tmp"]
        self._flags += tail
        self._drop_flags += tail

    def command(
        self,
        root: str,
        argv: Sequence[str],
        *,
        rootfs: str | None = None,
        mounts: Iterable[MountTriple] = (),
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        run_as: tuple[int, int] | None = None,
    ) -> list[str]:
        """The bwrap argv running ``argv`` with the task root ``root``'s top-level entries
        as the sandbox's own top-level directories, ``mounts`` at their container paths,
        the host's system directories (or the image root ``rootfs``) read-only, and
        ``env`` set. Raises :class:`UnsupportedTask` for a path the sandbox cannot show."""
        # Top-level entries of the task root become top-level dirs of the sandbox.
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            names = []
        spliced: set[str] = set()
        if rootfs is None:
            out = list(self._prefix)
            reserved: tuple[str, ...] = RESERVED
        else:
            out, reserved, spliced = self._image_prefix(rootfs, names)
        for name in names:
            target = "/" + name
            if name in spliced:
                assert rootfs is not None
                out += _splice(os.path.join(rootfs, name), f"{root}/{name}", target)
                continue
            if any(inside(target, r) for r in reserved):
                where = "the host's system directories" if rootfs is None else "the image"
                raise UnsupportedTask(
                    f"the bwrap runtime cannot place task paths under {target}: "
                    f"it shows {where} there read-only"
                )
            out += ["--bind", f"{root}/{name}", target]
        shown = "/" if rootfs is None else rootfs
        own_etc = rootfs is None or os.path.realpath(rootfs) == "/"
        for host, container, readonly in mounts:
            # Over a read-only system or image directory only where the mount point
            # exists there: bwrap cannot create it in a read-only bind.
            if inside(container, "/etc") and own_etc:
                possible = _is_dir_in(self.etc_dir, container.removeprefix("/etc"))
            else:
                possible = _is_dir_in(shown, container)
            if any(inside(container, r) for r in reserved) and not possible:
                raise UnsupportedTask(f"the bwrap runtime cannot mount at {container}")
            parent = os.path.dirname(container)
            if parent != "/" and not _is_dir_in(shown, parent):
                # bwrap would make the missing parent 0700, closed to the task's uid.
                out += ["--perms", "0755", "--dir", parent]
            out += ["--ro-bind" if readonly else "--bind", host, container]
        drop: list[str] = []
        if run_as is not None:
            if self.setpriv is None:
                raise UnsupportedTask(
                    "the bwrap runtime cannot run executors as an unprivileged uid: "
                    "setpriv (util-linux) is not installed"
                )
            if rootfs is None:
                drop = [self.setpriv]
            else:
                binds, program = self._image_helper()
                out += binds
                drop = list(program)
            uid, gid = run_as
            drop += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
            drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
            out += self._drop_flags
        else:
            out += self._flags
        for k, v in (env or {}).items():
            out += ["--setenv", k, v]
        out += ["--chdir", workdir or "/"]
        out += ["--", *drop, *argv]
        return out

    def _image_prefix(
        self, rootfs: str, task_names: list[str]
    ) -> tuple[list[str], tuple[str, ...], set[str]]:
        """The sandbox's start for an image root: its entries read-only, except empty
        directories the task puts its own files in; the paths the task may not use; and
        the image's directories the task's own paths go into (spliced: see
        :func:`_splice`)."""
        entries = self._image_roots.get(rootfs)
        if entries is None:
            entries = self._image_roots[rootfs] = _root_entries(rootfs)
        out = [self.executable]
        reserved = ["/proc", "/dev"]
        if os.path.realpath(rootfs) == "/":
            # The host's own root: its /etc only as the default sandbox shows it (no
            # secrets), and none of /run (service sockets).
            entries = [e for e in entries if e.name not in HOST_ROOT_SKIPPED]
            out += ["--ro-bind", self.etc_dir, "/etc"]
            reserved.append("/etc")
        spliced = set()
        for e in entries:
            if e.empty and e.name in task_names:
                continue
            if e.name in task_names and e.directory:
                spliced.add(e.name)
                continue
            out += e.args
            reserved.append("/" + e.name)
        out += ["--dev", "/dev", "--proc", "/proc"]
        return out, tuple(reserved), spliced

    def _image_helper(self) -> tuple[list[str], list[str]]:
        """bwrap arguments showing the host's setpriv, its libraries and loader under
        :data:`HELPER_DIR` in an image root, and the argv prefix that runs it there."""
        if self._helper is None:
            assert self.setpriv is not None
            self._helper = _helper_mounts(self.setpriv)
        return self._helper


def process_command(
    root: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    run_as: tuple[int, int] | None = None,
) -> tuple[list[str], str, dict[str, str]]:
    """The process runtime's host command: (argv, cwd, env). Container paths are not
    remapped: the working directory is ``root`` joined with ``workdir``."""
    rel = (workdir or "/").lstrip("/")
    cwd = os.path.join(root, rel) if rel else root
    tmp = os.path.join(root, "tmp")
    full_env = {
        "PATH": DEFAULT_PATH,
        "HOME": tmp,
        "TMPDIR": tmp,
        "JOBGATE_TASK_ROOT": root,
        **(env or {}),
    }
    out = list(argv)
    if run_as is not None:
        setpriv = which("setpriv")
        if setpriv is None:
            raise UnsupportedTask(
                "the process runtime cannot run executors as an unprivileged uid: "
                "setpriv (util-linux) is not installed"
            )
        uid, gid = run_as
        out = [
            setpriv,
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
            *out,
        ]
    return out, cwd, full_env


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


def _is_dir_in(root: str, path: str) -> bool:
    """Whether ``path`` (absolute) is a directory inside the root directory ``root``."""
    return os.path.isdir(os.path.join(root, path.lstrip("/")))


def _root_entries(rootfs: str) -> list[_RootEntry]:
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
    import subprocess  # only image roots with a task uid of their own need it

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


def system_mounts() -> list[str]:
    """bwrap arguments showing the host's system dirs: a bind per real directory, and the
    host's own symlink for a merged-/usr alias (``/bin -> usr/bin``), which costs no mount."""
    args: list[str] = []
    real = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    for d in SYSTEM_DIRS:
        if d in real:
            args += ["--ro-bind", d, d]
        elif os.path.islink(d) and any(inside(os.path.realpath(d), r) for r in real):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):  # a symlink elsewhere: show what it points to
            args += ["--ro-bind", d, d]
    return args


def build_etc(dest: str) -> None:
    """(Re)create ``dest`` as the sandbox's /etc: copies of the :data:`ETC_ENTRIES` there are.

    Only what any host user may read is copied (``/etc/ssl/private`` is not). A symlink
    stays a symlink where its target is visible in the sandbox too (``/etc/localtime`` into
    /usr, ``ssl/certs`` hash links); elsewhere (``resolv.conf`` into /run) what it points to
    is copied. Built beside ``dest`` and renamed into place, so a reader never sees half.

    Several processes may share ``dest`` (API workers, dispatchers, a restarted gateway
    whose adopted tasks still run): builds take turns (a lock file beside it), a copy the
    same as the one in place is dropped, and a replaced copy is kept, not deleted, since
    running sandboxes may still show it as their /etc.
    """
    import fcntl  # a builtin module: no cost on the node runner's start-up

    parent, name = os.path.split(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    lock = os.open(
        os.path.join(parent, f".{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Half-built copies a killed build left behind (no build runs now: the lock).
        for entry in os.listdir(parent):
            if entry.startswith(f".{name}-") and not entry.startswith(f".{name}-old-"):
                _rmtree(os.path.join(parent, entry))
        fresh = _mkdtemp(parent, f".{name}-")
        visible = tuple(
            os.path.realpath(d) for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)
        ) + tuple(f"/etc/{e}" for e in ETC_ENTRIES)
        real = _RealPaths()
        try:
            os.chmod(fresh, 0o755)
            for entry in ETC_ENTRIES:
                _copy_entry(f"/etc/{entry}", f"{fresh}/{entry}", visible, set(), real)
            if os.path.isdir(dest) and not os.path.islink(dest) and _same_tree(fresh, dest):
                _rmtree(fresh)
                return
            if os.path.lexists(dest):
                os.rename(dest, os.path.join(parent, f".{name}-old-{os.urandom(8).hex()}"))
            os.rename(fresh, dest)
        except BaseException:
            _rmtree(fresh)
            raise
    finally:
        os.close(lock)


def _same_tree(a: str, b: str) -> bool:
    """Whether two directory trees hold the same names, types, modes, links and bytes."""
    try:
        left, right = sorted(os.listdir(a)), sorted(os.listdir(b))
    except OSError:
        return False
    if left != right:
        return False
    for entry in left:
        pa, pb = f"{a}/{entry}", f"{b}/{entry}"
        sa, sb = os.lstat(pa), os.lstat(pb)
        if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode) or sa.st_mode != sb.st_mode:
            return False
        if stat.S_ISLNK(sa.st_mode):
            if os.readlink(pa) != os.readlink(pb):
                return False
        elif stat.S_ISDIR(sa.st_mode):
            if not _same_tree(pa, pb):
                return False
        elif sa.st_size != sb.st_size or _read(pa) != _read(pb):
            return False
    return True


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _mkdtemp(parent: str, prefix: str) -> str:
    """A new private directory in ``parent`` (``tempfile.mkdtemp`` without its imports)."""
    while True:
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def _rmtree(path: str) -> None:
    """Remove ``path`` and all in it, ignoring errors (directories this module made)."""
    import shutil  # rare (stale or replaced copies): not on the node runner's start-up

    shutil.rmtree(path, ignore_errors=True)


class _RealPaths:
    """``os.path.realpath`` (not strict) that remembers the directories it resolved: /etc's
    ~700 certificate links share a few parents, which plain realpath ``lstat``s again for
    every link (most of the sandbox /etc's build time)."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}
        self._dirs: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if not path.startswith("/"):
            path = os.path.join(os.getcwd(), path)
        parent, _, name = path.rpartition("/")
        try:
            if name in ("", ".", ".."):
                return self._walk("/", path, set())
            base = self._dirs.get(parent)
            if base is None:
                base = self._dirs[parent] = self._walk("/", parent, set())
            return self._step(base, name, set())
        except _Loop:
            return os.path.realpath(path)

    def _walk(self, current: str, rest: str, links: set[str]) -> str:
        """``rest`` resolved from the resolved directory ``current``, component by
        component (``..`` after a symlink goes up from where it led, as realpath does)."""
        for part in rest.split("/"):
            if part == "..":
                current = os.path.dirname(current)
            elif part not in ("", "."):
                current = self._step(current, part, links)
        return current

    def _step(self, base: str, name: str, links: set[str]) -> str:
        candidate = f"{base}/{name}" if base != "/" else f"/{name}"
        known = self._known.get(candidate)
        if known is not None:
            return known
        try:
            st = os.lstat(candidate)
        except OSError:
            return candidate  # missing: kept as written
        if not stat.S_ISLNK(st.st_mode):
            self._known[candidate] = candidate
            return candidate
        if candidate in links:
            raise _Loop
        links.add(candidate)
        target = os.readlink(candidate)
        resolved = self._walk("/" if target.startswith("/") else base, target, links)
        links.discard(candidate)
        self._known[candidate] = resolved
        return resolved


class _Loop(Exception):
    """A symlink loop: plain realpath decides what it resolves to."""


def _copy_entry(
    src: str, dst: str, visible: tuple[str, ...], seen: set[str], real: _RealPaths
) -> None:
    try:
        st = os.lstat(src)
    except OSError:
        return  # missing on this host: nothing to show
    if stat.S_ISLNK(st.st_mode):
        target = real(src)
        if any(inside(target, v) for v in visible):
            os.symlink(os.readlink(src), dst)
            return
        try:
            st = os.stat(src)
        except OSError:
            return  # dangling
        src = target
    readable = st.st_mode & stat.S_IROTH
    if stat.S_ISREG(st.st_mode) and readable:
        _copy_file(src, dst)
        os.chmod(dst, stat.S_IMODE(st.st_mode) & 0o755)
    elif stat.S_ISDIR(st.st_mode) and readable and st.st_mode & stat.S_IXOTH:
        resolved = real(src)
        if resolved in seen:
            return  # a symlink cycle
        seen.add(resolved)
        os.mkdir(dst)
        with os.scandir(src) as entries:
            for e in entries:
                _copy_entry(f"{src}/{e.name}", f"{dst}/{e.name}", visible, seen, real)
        os.chmod(dst, 0o755)


def _copy_file(src: str, dst: str) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
