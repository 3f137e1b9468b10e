"""OCI container engines driven through their command line: podman and docker.

Each executor is one container named ``spec.name`` and labelled with this service's
instance, so that :meth:`OciRuntime.finish` can always remove it and
:meth:`OciRuntime.sweep` can remove what a crashed run left. The engine applies the
executor's limits itself (its processes leave the runner's cgroup through the engine's
monitor), runs it as an unprivileged user where it can, without network unless asked,
and with the task's paths bound at their container paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import ClassVar

from jobgate.runtimes.base import (
    DEFAULT_PATH,
    ExecSpec,
    Finished,
    HostCommand,
    Runtime,
    RuntimeFailure,
    UnsupportedTask,
)
from jobgate.runtimes.images import ImageCatalog, ImageSource, qualify

INSTANCE_LABEL = "org.jobgate.instance"
# Archive formats ``<engine> load`` reads; anything else is tried as a root file system.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".oci.tar", ".docker.tar")
# What the engine's client itself needs from the service's environment (rootless podman,
# a remote docker daemon, site configuration); executors never see it.
CLIENT_ENV = (
    "HOME",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "CONTAINER_HOST",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "TMPDIR",
)
# Container paths the engine owns: a task path there would hide what the image needs.
ENGINE_PATHS = ("/proc", "/dev", "/sys")
ENGINE_TIMEOUT = 120.0
OOM_EXIT = 128 + 9  # engines report a SIGKILLed container as 137
ENGINE_ERROR_EXIT = 125  # the engine itself failed (docker and podman agree)


# Processes per executor: a uid-wide count (every executor runs as the same uid), and
# confined hosts refuse values well below their reported hard limit.
DEFAULT_NPROC = 4096


def default_ulimits() -> list[str]:
    """Explicit ``--ulimit`` values within this service's own limits. An engine's defaults
    (nofile 1048576) can exceed a confined host's hard limit, and runc then fails."""
    nofile = [_limit(v) for v in resource.getrlimit(resource.RLIMIT_NOFILE)]
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = (
        DEFAULT_NPROC if nproc_hard == resource.RLIM_INFINITY else min(DEFAULT_NPROC, nproc_hard)
    )
    return [f"nofile={nofile[0]}:{nofile[1]}", f"nproc={nproc}:{nproc}"]


def _limit(value: int) -> str:
    return "-1" if value == resource.RLIM_INFINITY else str(value)


def parse_user(user: str) -> tuple[int, int] | None:
    """``"65534:65534"`` → (65534, 65534); None for names (the engine resolves those)."""
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return int(uid), int(gid or uid)


def bind_points(spec: ExecSpec) -> list[tuple[Path, str]]:
    """(host, container) pairs for the task's paths and its private ``/tmp``."""
    points = [(spec.root / "tmp", "/tmp")]
    for path in spec.paths:
        if path == "/tmp" or path.startswith("/tmp/"):
            continue  # inside the bound /tmp already
        if path == "/" or any(path == p or path.startswith(p + "/") for p in ENGINE_PATHS):
            raise UnsupportedTask(f"a container cannot have task files at {path}")
        if ":" in path or "," in path:
            raise UnsupportedTask(f"a container path cannot contain ':' or ',': {path}")
        host = spec.root / path.lstrip("/")
        if os.path.lexists(host):
            points.append((host, path))
    return points


def shared_binds(spec: ExecSpec) -> list[str]:
    """``HOST:CONTAINER[:ro]`` for the site's host mounts (``ExecSpec.mounts``), as
    podman's and docker's ``--volume`` and apptainer's ``--bind`` spell them."""
    out = []
    for m in spec.mounts:
        if ":" in m.container or "," in m.container:
            raise UnsupportedTask(f"a container path cannot contain ':' or ',': {m.container}")
        out.append(f"{m.host}:{m.container}" + (":ro" if m.readonly else ""))
    return out


class OciRuntime(Runtime):
    """Shared by podman and docker, whose command lines agree on what is used here."""

    isolated: ClassVar[bool] = True
    limits_itself: ClassVar[bool] = True
    executable_name: ClassVar[str]
    rootless_maps_user: ClassVar[bool] = False
    """Run by a non-root service, the engine maps container root to that service's user
    (rootless podman): no other user is needed, nor possible on the task's files."""
    remove_args: ClassVar[tuple[str, ...]] = ()
    client_removes: ClassVar[bool] = False
    """``run --rm`` removes the container before the client exits (podman; docker's
    daemon removes it asynchronously, so docker's are removed by :meth:`finish`)."""

    def __init__(
        self,
        executable: str | None = None,
        *,
        catalog: ImageCatalog | None = None,
        instance: str = "default",
        network: bool = False,
        user: str = "65534:65534",
        ulimits: Sequence[str] | None = None,
        pull_timeout: float = 600.0,
        oci_runtime: str = "",
    ) -> None:
        found = executable or shutil.which(self.executable_name)
        if not found:
            raise FileNotFoundError(
                f"{self.executable_name} is not installed (JOBGATE_RUNTIME={self.name})"
            )
        self.executable = found
        self.catalog = catalog or ImageCatalog()
        self.instance = instance
        self.network = network
        if self.rootless_maps_user and os.geteuid() != 0:
            user = ""
        self.user = user or None
        owner = parse_user(user) if user else None
        # Task files must be writable by that user: chowned to it when we may.
        self.chown_to = owner if os.geteuid() == 0 else None
        self.ulimits = list(ulimits) if ulimits is not None else default_ulimits()
        self.pull_timeout = pull_timeout
        self.oci_runtime = oci_runtime
        """The engine's low-level runtime (runc, crun…); empty: the engine's default."""
        self.client_env = {"PATH": DEFAULT_PATH} | {
            k: os.environ[k] for k in CLIENT_ENV if k in os.environ
        }
        self._present: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- the engine's command line -------------------------------------------------------

    def global_args(self) -> list[str]:
        """Arguments before the engine's subcommand (podman's ``--runtime``)."""
        return []

    def run_args(self, spec: ExecSpec, source: ImageSource) -> list[str]:
        """Engine-specific ``run`` options."""
        return []

    def image_argument(self, source: ImageSource) -> list[str]:
        if source.rootfs is not None:
            raise UnsupportedTask(
                f"the {self.name} runtime cannot run an unpacked root directory "
                f"({source.rootfs}); map {source.requested!r} to an image"
            )
        return [self.engine_ref(source.ref)]

    def engine_ref(self, ref: str) -> str:
        return ref

    def engine(self, *args: str) -> list[str]:
        return [self.executable, *self.global_args(), *args]

    def command(self, spec: ExecSpec) -> HostCommand:
        source = self.catalog.resolve(spec.image)
        argv = self.engine(
            "run", "--name", spec.name, "--label", f"{INSTANCE_LABEL}={self.instance}"
        )
        argv += ["--interactive", "--pull", "never", "--security-opt", "no-new-privileges"]
        argv += self.run_args(spec, source)
        if self._auto_removed(spec):
            argv.append("--rm")
        if not self.network:
            argv += ["--network", "none"]
        if self.user:
            argv += ["--user", self.user]
        for ulimit in self.ulimits:
            argv += ["--ulimit", ulimit]
        if spec.ram_bytes:
            # Swap as large as the memory: no swap, so the limit means what it says.
            argv += ["--memory", f"{spec.ram_bytes}b", "--memory-swap", f"{spec.ram_bytes}b"]
        if spec.cpu_cores:
            argv += ["--cpus", str(spec.cpu_cores)]
        for host, container in bind_points(spec):
            argv += ["--volume", f"{host}:{container}"]
        for bind in shared_binds(spec):
            argv += ["--volume", bind]
        if spec.workdir:
            argv += ["--workdir", spec.workdir]
        for key, value in spec.env.items():
            argv += ["--env", f"{key}={value}"]
        # The whole argv as the entrypoint: the image's ENTRYPOINT and CMD play no part.
        argv += ["--entrypoint", json.dumps(spec.argv)]
        argv += self.image_argument(source)
        return HostCommand(argv=argv, cwd=spec.root, env=dict(self.client_env))

    # -- before and after ---------------------------------------------------------------

    def prepare(self, spec: ExecSpec) -> None:
        source = self.catalog.resolve(spec.image)
        if source.rootfs is None:
            self.ensure_image(source)
        elif not source.rootfs.is_dir():
            raise RuntimeFailure(
                f"image {spec.image!r} maps to {source.rootfs}, which is not a directory"
            )
        if self.chown_to is not None:
            chown_tree(spec.root, *self.chown_to)

    def ensure_image(self, source: ImageSource) -> None:
        """Make ``source`` present in the engine: already there, else loaded from the image
        directory, else pulled. Raises :class:`RuntimeFailure` with the engine's words."""
        ref = self.engine_ref(source.ref)
        if ref in self._present:
            return
        with self._lock(ref):
            if ref in self._present:
                return
            if self._run("image", "inspect", "--format", "{{.Id}}", ref).returncode != 0:
                archive = self.catalog.archive(source, ARCHIVE_SUFFIXES)
                if archive is not None:
                    self._load(archive, ref)
                else:
                    self._pull(source, ref)
            self._present.add(ref)

    def _load(self, archive: Path, ref: str) -> None:
        loaded = self._run("load", "--input", str(archive))
        if loaded.returncode == 0:
            names = _loaded_names(loaded.stdout)
            if ref in names:
                return
            if names:
                tagged = self._run("tag", names[0], ref)
                if tagged.returncode == 0:
                    return
                raise RuntimeFailure(f"cannot tag {names[0]} as {ref}: {_msg(tagged)}")
        # Not an image archive: a root file system tarball, imported as the image.
        imported = self._run("import", str(archive), ref)
        if imported.returncode != 0:
            raise RuntimeFailure(
                f"cannot load image {ref} from {archive}: {_msg(loaded)}; "
                f"importing it as a root file system failed too: {_msg(imported)}"
            )

    def _pull(self, source: ImageSource, ref: str) -> None:
        try:
            pulled = self._run("pull", "--quiet", ref, timeout=self.pull_timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(
                f"pulling image {source.requested!r} ({ref}) took longer than "
                f"{self.pull_timeout:g} s"
            ) from None
        if pulled.returncode != 0:
            raise RuntimeFailure(
                f"image {source.requested!r} is not available: {self.name} pull {ref} "
                f"failed: {_msg(pulled)}"
            )

    def _auto_removed(self, spec: ExecSpec) -> bool:
        # Under a memory limit the container must outlive its exit: its OOM state is read.
        return self.client_removes and not spec.ram_bytes

    def finish(self, spec: ExecSpec, returncode: int | None) -> Finished:
        status = None if returncode is None else exit_status(returncode)
        if status == ENGINE_ERROR_EXIT:
            # Maybe the image went away since it was checked: check again next time.
            self._present.discard(self.engine_ref(self.catalog.resolve(spec.image).ref))
        oom = False
        if status == OOM_EXIT and not self._auto_removed(spec):
            # Only a SIGKILLed container can have been OOM-killed: ask only then.
            inspected = self._run(
                "container", "inspect", "--format", "{{.State.OOMKilled}}", spec.name
            )
            oom = inspected.returncode == 0 and inspected.stdout.strip() == "true"
        # A client that exited by itself below the engine's own error codes (125-127) has
        # removed its container already; a killed one (cancel) or a failed start may not.
        if not (self._auto_removed(spec) and returncode is not None and 0 <= returncode < 125):
            self.remove(spec.name)
        return Finished(oom=oom)

    def remove(self, *names: str) -> None:
        """Stop and delete containers at once; missing ones are no error."""
        if names:
            self._run("rm", "--force", *self.remove_args, *names)

    def sweep(self, keep: Collection[str] = ()) -> int:
        listed = self._run(
            "ps",
            "--all",
            "--filter",
            f"label={INSTANCE_LABEL}={self.instance}",
            "--format",
            "{{.ID}} {{.Names}}",
        )
        ids = []
        for line in listed.stdout.splitlines() if listed.returncode == 0 else []:
            cid, _, name = line.partition(" ")
            # Executor containers are named jobgate-<job id>-<index> (ExecSpec.name).
            job_id = name.strip().removeprefix("jobgate-").rpartition("-")[0]
            if cid and job_id not in keep:
                ids.append(cid)
        self.remove(*ids)
        return len(ids)

    def describe(self) -> dict[str, str]:
        facts = super().describe()
        if self.user:
            facts["user"] = self.user
        facts["network"] = "host" if self.network else "none"
        if self.oci_runtime:
            facts["oci_runtime"] = self.oci_runtime
        return facts

    # -- helpers ------------------------------------------------------------------------

    def _lock(self, ref: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(ref, threading.Lock())

    def _run(self, *args: str, timeout: float = ENGINE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self.engine(*args),
                capture_output=True,
                text=True,
                env=self.client_env,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self.executable}: {exc}") from exc


class PodmanRuntime(OciRuntime):
    """podman, as root or not; ``oci_runtime`` picks its low-level runtime (runc, crun)."""

    name: ClassVar[str] = "podman"
    executable_name: ClassVar[str] = "podman"
    rootless_maps_user: ClassVar[bool] = True
    remove_args: ClassVar[tuple[str, ...]] = ("--time", "0")
    client_removes: ClassVar[bool] = True

    def global_args(self) -> list[str]:
        return ["--runtime", self.oci_runtime] if self.oci_runtime else []

    def run_args(self, spec: ExecSpec, source: ImageSource) -> list[str]:
        # A container of the same name left by an interrupted attempt of this task.
        return ["--replace"]

    def image_argument(self, source: ImageSource) -> list[str]:
        if source.rootfs is not None:
            # ``:O``: an overlay on the directory, so neither the executor nor the mount
            # points the engine creates (/proc, /dev, the task's paths) change it.
            return ["--rootfs", f"{source.rootfs}:O"]
        return [self.engine_ref(source.ref)]

    def engine_ref(self, ref: str) -> str:
        return qualify(ref)


class DockerRuntime(OciRuntime):
    """The docker CLI. The daemon runs containers as root, so the user setting always
    applies; task files are chowned to it only when this service runs as root."""

    name: ClassVar[str] = "docker"
    executable_name: ClassVar[str] = "docker"

    def run_args(self, spec: ExecSpec, source: ImageSource) -> list[str]:
        return ["--runtime", self.oci_runtime] if self.oci_runtime else []


def exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _loaded_names(output: str) -> list[str]:
    names = []
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower().startswith("loaded image"):
            names += [n.strip() for n in value.split(",") if n.strip()]
    return names


def _msg(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or "").strip()
    return text or f"exit status {proc.returncode}"


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Hand the task's files to the executor's user (never following symlinks)."""
    with contextlib.suppress(OSError):
        os.lchown(root, uid, gid)
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(top, name), uid, gid)
