"""A Debian base image made offline: ``debootstrap`` from Debian's mirror, ``podman import``.

No image registry is reachable here, so the jobgate image is built ``FROM`` a root made from
Debian's own packages. The root is cached under a directory named by a hash of its recipe
(suite, variant, packages, mirror, architecture): a rerun with the same recipe reuses it,
a changed recipe builds a new one. Run as a script to build it ahead of the tests:
``python -m tests.image.base``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("JOBGATE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the jobgate image needs at run time: Python (with venv for the install), bubblewrap
# for task sandboxes; util-linux (setpriv) is already in minbase.
PACKAGES = ("python3", "python3-venv", "bubblewrap", "ca-certificates")
# PostgreSQL for the compose test (the compose file names the official image; no registry
# here, so the test builds a stand-in from Debian's package).
POSTGRES_PACKAGES = ("postgresql-15",)
CACHE = Path(os.environ.get("JOBGATE_TEST_CACHE", "/var/cache/jobgate-tests"))


def recipe(packages: tuple[str, ...] = PACKAGES) -> dict[str, object]:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "suite": SUITE,
        "variant": "minbase",
        "packages": sorted(packages),
        "mirror": MIRROR,
        "arch": arch,
        "trimmed": "doc,man,locale,info",
    }


def recipe_key(packages: tuple[str, ...] = PACKAGES) -> str:
    text = json.dumps(recipe(packages), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def image_ref(packages: tuple[str, ...] = PACKAGES) -> str:
    return f"localhost/jobgate-base-debian:{SUITE}-{recipe_key(packages)}"


def skip_reason() -> str | None:
    """Why the base image cannot be made here (None when it can)."""
    if os.geteuid() != 0:
        return "building the Debian base root needs root (debootstrap)"
    for tool in ("debootstrap", "podman", "runc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (make system-deps installs it when run as root)"
    return None


def podman(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    """``podman`` with runc (crun fails here); a failure's message holds podman's stderr."""
    argv = ["podman", "--runtime", "/usr/sbin/runc", *args]
    done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        argv, capture_output=True, text=True, **kw
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv[3:6]} exited {done.returncode}: {done.stderr[-3000:]}")
    return done


def has_image(ref: str) -> bool:
    argv = ["podman", "image", "exists", ref]
    return subprocess.run(argv, capture_output=True).returncode == 0


def build_root(packages: tuple[str, ...] = PACKAGES) -> Path:
    """The cached root (built once per recipe; concurrent callers wait for one build)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / f"debian-{SUITE}-{recipe_key(packages)}"
    with (CACHE / f".{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").exists():
            return root
        work = root.with_name(root.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        r = recipe(packages)
        subprocess.run(
            [
                "debootstrap",
                f"--variant={r['variant']}",
                f"--arch={r['arch']}",
                "--include=" + ",".join(packages),
                SUITE,
                str(work),
                MIRROR,
            ],
            check=True,
            capture_output=True,
        )
        # Package caches and lists, documentation (but its copyright files), manuals and
        # translations make the image larger and are of no use in it.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (work / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        for sub in ("usr/share/man", "usr/share/locale", "usr/share/info"):
            shutil.rmtree(work / sub, ignore_errors=True)
            (work / sub).mkdir()
        for p in (work / "usr/share/doc").rglob("*"):
            if p.is_file() and p.name != "copyright":
                p.unlink()
        (work / "etc" / "apt" / "sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
        shutil.rmtree(root, ignore_errors=True)
        work.rename(root)
        (root / ".complete").write_text(json.dumps(r, sort_keys=True))
        return root


def ensure_image(packages: tuple[str, ...] = PACKAGES) -> str:
    """The base image's reference, imported into podman from the cached root if needed."""
    ref = image_ref(packages)
    if has_image(ref):
        return ref
    root = build_root(packages)
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--exclude=./.complete", "-c", "."], stdout=subprocess.PIPE
    )
    podman("import", "-", ref, stdin=tar.stdout)
    assert tar.wait() == 0
    return ref


if __name__ == "__main__":
    started = time.monotonic()
    reason = skip_reason()
    if reason:
        sys.exit(reason)
    packages = POSTGRES_PACKAGES if sys.argv[1:] == ["postgres"] else PACKAGES
    print(ensure_image(packages), f"{time.monotonic() - started:.1f}s")
