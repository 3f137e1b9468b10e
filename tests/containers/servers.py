"""Podman fixtures: a local busybox image (no registry here) and a server that uses it.

The image is built from Debian's static busybox with ``podman import``, as a site without
a registry would; tests skip with the reason when podman or a static busybox is missing.
A pytest plugin (loaded by ``tests/conftest.py``), so that the contract suite at the top of
``tests/`` and the container tests share one podman server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobgate.config import default_podman_runtime
from tests.conftest import Server


def busybox_ref() -> str:
    """A name of the test image no other test process uses (xdist workers build their own)."""
    return f"localhost/jobgate-test-busybox-{uuid.uuid4().hex[:8]}:latest"


def podman(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    runtime = default_podman_runtime()
    argv = ["podman", *(["--runtime", runtime] if runtime else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kw)  # type: ignore[call-overload, no-any-return]


def static_busybox() -> str | None:
    found = shutil.which("busybox")
    if found is None:
        return None
    with open(found, "rb") as f:
        head = f.read(4096)
    # A dynamically linked build names its loader; a static one (busybox-static) does not.
    return None if b"ld-linux" in head else found


def _podman_skip_reason() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (make system-deps installs it when run as root)"
    if static_busybox() is None:
        return "a static busybox is not installed (busybox-static)"
    return None


requires_podman = pytest.mark.skipif(
    _podman_skip_reason() is not None, reason=_podman_skip_reason() or ""
)


def build_rootfs(dest: Path) -> Path:
    """An unpacked busybox root: /bin with every applet, empty /etc and /tmp."""
    busybox = static_busybox()
    assert busybox is not None
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", dest / "bin" / applet)
    for d in ("etc", "tmp", "data", "mnt"):
        (dest / d).mkdir()
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    # Modes set outright: the image runs as an unprivileged user whatever the umask was.
    for path in (dest, *(dest / d for d in ("bin", "etc", "data", "mnt"))):
        path.chmod(0o755)
    (dest / "tmp").chmod(0o1777)
    (dest / "bin" / "busybox").chmod(0o755)
    (dest / "etc" / "passwd").chmod(0o644)
    return dest


def import_image(rootfs: Path, ref: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    podman("import", "-", ref, stdin=tar.stdout)
    assert tar.wait() == 0


@dataclass
class PodmanSite:
    """What the podman tests share: the server, its directories and image names."""

    server: Server
    allowed: Path
    image_dir: Path
    rootfs: Path
    archived_ref: str
    rootfs_tar_ref: str


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _podman_skip_reason()
    if reason:
        pytest.skip(reason)
    return build_rootfs(tmp_path_factory.mktemp("busybox") / "root")


@pytest.fixture(scope="session")
def busybox_image(busybox_rootfs: Path) -> Iterator[str]:
    ref = busybox_ref()
    import_image(busybox_rootfs, ref)
    yield ref
    podman("rmi", "--force", ref, check=False)


@pytest.fixture(scope="session")
def podman_site(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str, busybox_rootfs: Path
) -> Iterator[PodmanSite]:
    tag = uuid.uuid4().hex[:8]
    allowed = tmp_path_factory.mktemp("podman-allowed")
    image_dir = tmp_path_factory.mktemp("podman-images")
    # Two archives an air-gapped site may hold: an image saved by podman, and a plain
    # root file system tarball; neither image is in podman's store until a task needs it.
    archived = f"localhost/jobgate-test-archived-{tag}:latest"
    podman("tag", busybox_image, archived)
    saved = image_dir / f"localhost_jobgate-test-archived-{tag}_latest.tar"
    podman("save", "--output", str(saved), archived)
    podman("rmi", archived)
    rootfs_tar = f"localhost/jobgate-test-rootfs-{tag}:latest"
    with (image_dir / f"localhost_jobgate-test-rootfs-{tag}.tar").open("wb") as out:
        subprocess.run(["tar", "-C", str(busybox_rootfs), "-c", "."], stdout=out, check=True)
    image_map = ",".join(
        [
            f"alpine={busybox_image}",
            f"python={busybox_image}",
            f"archived={archived}",
            f"rootfs-tar={rootfs_tar}",
            f"unpacked=dir:{busybox_rootfs}",
        ]
    )
    srv = Server(
        tmp_path_factory.mktemp("podman-srv") / "data",
        {
            "JOBGATE_RUNTIME": "podman",
            "JOBGATE_IMAGE_MAP": image_map,
            "JOBGATE_IMAGE_DIR": str(image_dir),
            "JOBGATE_ALLOWED_DIRS": str(allowed),
        },
    ).start()
    yield PodmanSite(srv, allowed, image_dir, busybox_rootfs, archived, rootfs_tar)
    srv.stop()
    podman("rmi", "--force", archived, rootfs_tar, check=False)


@pytest.fixture(scope="session")
def podman_server(podman_site: PodmanSite) -> Server:
    """The podman site's server (``JOBGATE_RUNTIME=podman``; ``alpine`` maps to busybox)."""
    return podman_site.server


def containers_named(prefix: str) -> list[str]:
    """Names of every container (running or not) whose name starts with ``prefix``."""
    listed = podman("ps", "--all", "--format", "{{.Names}}")
    return [n for n in listed.stdout.split() if n.startswith(prefix)]
