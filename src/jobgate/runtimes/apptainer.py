"""Apptainer (and its predecessor Singularity): HPC containers without a daemon.

The container's processes stay children of the command the runner starts, so the
runner's own cgroups limit, watch and kill them (:attr:`limits_itself` is False) and there
is nothing to remove afterwards. Images are SIF files or unpacked directories: a mapped
path or ``dir:`` root, a ``.sif`` in the image directory, or a registry image pulled once
into ``cache_dir`` (``docker://`` + the reference).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import ClassVar

from jobgate.runtimes.base import DEFAULT_PATH, ExecSpec, HostCommand, Runtime, RuntimeFailure
from jobgate.runtimes.images import ImageCatalog, ImageSource, archive_stems
from jobgate.runtimes.oci import bind_points, chown_tree, parse_user, shared_binds

SIF_SUFFIXES = (".sif", ".simg")


class ApptainerRuntime(Runtime):
    name: ClassVar[str] = "apptainer"
    isolated: ClassVar[bool] = True

    def __init__(
        self,
        executable: str | None = None,
        *,
        catalog: ImageCatalog | None = None,
        cache_dir: Path,
        network: bool = False,
        user: str = "65534:65534",
        pull_timeout: float = 600.0,
    ) -> None:
        # Apptainer installs a ``singularity`` alias; either name finds either program.
        names = [executable] if executable else []
        names += ["apptainer", "singularity"]
        if executable and os.sep in executable:
            names = []  # a path is taken as given
        found = executable if not names else next((f for f in map(shutil.which, names) if f), None)
        if not found:
            raise FileNotFoundError(f"{names[0]} is not installed (JOBGATE_RUNTIME={names[0]})")
        self.executable = found
        self.catalog = catalog or ImageCatalog()
        self.cache_dir = cache_dir
        self.network = network
        # Apptainer runs as its caller; only root may choose another uid.
        owner = parse_user(user) if user else None
        self.run_as = owner if os.geteuid() == 0 else None
        self.pull_timeout = pull_timeout
        self._pull_lock = threading.Lock()

    def image_path(self, source: ImageSource) -> tuple[str, bool]:
        """What ``exec`` is given for ``source``, and whether it is a local file or dir."""
        if source.rootfs is not None:
            return str(source.rootfs), True
        if source.ref.startswith("/"):
            return source.ref, True
        archive = self.catalog.archive(source, SIF_SUFFIXES)
        if archive is not None:
            return str(archive), True
        stem = archive_stems(source.ref)[0]
        return str(self.cache_dir / f"{stem}.sif"), False

    def prepare(self, spec: ExecSpec) -> None:
        if self.run_as:
            chown_tree(spec.root, *self.run_as)
        source = self.catalog.resolve(spec.image)
        path, local = self.image_path(source)
        if local:
            if not os.path.exists(path):
                raise RuntimeFailure(f"image {spec.image!r} maps to {path}, which does not exist")
            return
        if os.path.exists(path):
            return
        with self._pull_lock:
            if not os.path.exists(path):
                self._pull(source, Path(path))

    def _pull(self, source: ImageSource, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
        os.close(fd)
        uri = source.ref if "://" in source.ref else f"docker://{source.ref}"
        argv = [self.executable, "pull", "--force", part, uri]
        try:
            pulled = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.pull_timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if pulled.returncode != 0:
                msg = (pulled.stderr or pulled.stdout).strip() or f"exit {pulled.returncode}"
                raise RuntimeFailure(
                    f"image {source.requested!r} is not available: {self.name} pull {uri} "
                    f"failed: {msg}"
                )
            os.replace(part, dest)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(
                f"pulling image {source.requested!r} took longer than {self.pull_timeout:g} s"
            ) from None
        finally:
            if os.path.exists(part):
                os.unlink(part)

    def command(self, spec: ExecSpec) -> HostCommand:
        image, _ = self.image_path(self.catalog.resolve(spec.image))
        argv = [self.executable, "exec", "--containall", "--no-home"]
        if not self.network:
            argv += ["--net", "--network", "none"]
        if self.run_as:
            argv += ["--security", f"uid:{self.run_as[0]},gid:{self.run_as[1]}"]
        for host, container in bind_points(spec):
            argv += ["--bind", f"{host}:{container}"]
        for bind in shared_binds(spec):
            argv += ["--bind", bind]
        if spec.workdir:
            argv += ["--pwd", spec.workdir]
        for key, value in spec.env.items():
            argv += ["--env", f"{key}={value}"]
        argv += [image, *spec.argv]
        return HostCommand(argv=argv, cwd=spec.root, env={"PATH": DEFAULT_PATH})

    def describe(self) -> dict[str, str]:
        facts = super().describe()
        facts["executable"] = os.path.basename(self.executable)
        if self.run_as:
            facts["user"] = f"{self.run_as[0]}:{self.run_as[1]}"
        return facts
