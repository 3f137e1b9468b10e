"""Builds the jobgate image from the repository's Containerfile, offline.

The build context is a temporary directory holding the Containerfile and ``dist/``: a
fresh wheel of this checkout plus the wheels of its dependencies. Those are cached under
:data:`tests.image.base.CACHE`, keyed by a hash of pyproject.toml (a changed dependency
list fetches them again, from the package index pip is configured with).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from tests.image.base import CACHE, podman

REPO = Path(__file__).resolve().parents[2]


def dependency_wheels() -> Path:
    """A directory with a wheel of every dependency of jobgate (cached)."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    dest = CACHE / f"wheels-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{dest.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / ".complete").exists():
            return dest
        work = dest.with_name(dest.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "wheel", "-w", str(work), str(REPO)], check=True, capture_output=True)
        for wheel in work.glob("jobgate-*.whl"):
            wheel.unlink()  # the checkout's own wheel is built fresh for every image
        work.rename(dest)
        (dest / ".complete").touch()
        return dest


def build_context(dest: Path) -> Path:
    dist = dest / "dist"
    dist.mkdir(parents=True)
    for wheel in dependency_wheels().glob("*.whl"):
        shutil.copy2(wheel, dist / wheel.name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # setuptools builds in the checkout's build/, and a file deleted or renamed since the
    # last build (a migration) would ride along from build/lib into the wheel.
    shutil.rmtree(REPO / "build", ignore_errors=True)
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(dist), str(REPO)], check=True, capture_output=True
    )
    shutil.copy2(REPO / "Containerfile", dest / "Containerfile")
    shutil.copy2(REPO / ".containerignore", dest / ".containerignore")
    return dest


def build_image(context: Path, base: str, ref: str) -> None:
    """``podman build`` with no network: every package comes from the base and dist/."""
    podman(
        "build",
        # No layer cache: looking it up walks every image in the store, and fails when
        # another test process removes one meanwhile ("layer not known").
        "--layers=false",
        "--format",
        "docker",  # the OCI format has no HEALTHCHECK
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        "PIP_OPTIONS=--no-index",
        "-t",
        ref,
        "-f",
        str(context / "Containerfile"),
        str(context),
    )
