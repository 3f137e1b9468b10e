"""Virtual environments for the workflow engines and old clients the tests drive.

Each engine pins libraries that conflict with the test environment (and with each other:
Toil and Snakemake's TES plugin need py-tes 0.4, the suite py-tes 1.1), so each gets a venv
of its own, built once from PyPI and reused while its requirements stay the same. A lock
file makes concurrent test workers wait for one build instead of racing.

Engines run their workers inside tasks from the same venv, as an unprivileged task uid:
so the venvs live where any user may read them (``/var/tmp/jobgate-test-engines``;
``JOBGATE_TEST_ENGINE_VENVS`` moves it) and are made from the system's Python
(``/usr/bin/python3``), not from one under a private home such as ``/root/.pyenv``.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(os.environ.get("JOBGATE_TEST_ENGINE_VENVS", "/var/tmp/jobgate-test-engines"))
SYSTEM_PYTHON = "/usr/bin/python3"

PYTES_0 = ("py-tes==0.4.2", "six==1.17.0")
SNAKEMAKE = (
    "snakemake==9.27.1",
    "snakemake-executor-plugin-tes==0.1.3",
    "snakemake-storage-plugin-fs==1.1.3",
    *PYTES_0,
)
SNAKEMAKE_WHEELS = ("snakemake-storage-plugin-fs==1.1.3",)
"""What each remote Snakemake job pip-installs (offline, from ``<venv>/wheels``)."""
TOIL = ("toil==7.0.0", "toil-batch-system-tes==2.0.0")
CWL_TES = ("cwl-tes==0.3.0",)
"""cwl-tes's last release pins cwltool 1.0.2019, whose dependencies build only with
setuptools < 58 (2to3) and run on Python ≤ 3.9: see :func:`old_python`."""
CWL_TES_SETUP = ("setuptools<58", "wheel")


def build(
    name: str,
    requirements: Sequence[str],
    *,
    wheels: Sequence[str] = (),
    interpreter: str | None = None,
    setup: Sequence[str] = (),
) -> Path:
    """The venv ``name`` holding ``requirements`` (built now if missing). ``wheels`` are
    downloaded with their dependencies into ``<venv>/wheels`` for offline installs.
    ``interpreter`` makes the venv (default :func:`python`); ``setup`` is installed first
    and then builds the requirements (no build isolation)."""
    made_by = interpreter or python()
    parts = [*requirements, "--", *wheels, "--", made_by, *setup]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    target = ROOT / f"{name}-{key}"
    ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(ROOT, 0o755)
    with (ROOT / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".ready").exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        run = functools.partial(subprocess.run, check=True, preexec_fn=_readable_by_all)
        run([made_by, "-m", "venv", str(target)])
        pip = [str(target / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
        if setup:
            run([*pip, "install", *setup])
            run([*pip, "install", "--no-build-isolation", *requirements])
        else:
            run([*pip, "install", *requirements])
        if wheels:
            dest = target / "wheels"
            run([*pip, "download", "-d", str(dest), *wheels])
        (target / ".ready").touch()
        return target


def _readable_by_all() -> None:
    os.umask(0o022)


def python() -> str:
    """The interpreter engine venvs are made from: the system's, where there is one."""
    if os.access(SYSTEM_PYTHON, os.X_OK):
        probe = subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"], check=False)
        if probe.returncode == 0:  # Debian ships venv apart (python3-venv)
            return SYSTEM_PYTHON
    return str(getattr(sys, "_base_executable", sys.executable))


def old_python() -> str | None:
    """A Python 3.7 to 3.9 interpreter (cwl-tes's cwltool needs one), if the host has one
    that runs: under pyenv's versions, else on PATH (a pyenv shim on PATH may not run)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates: list[str] = []
    for minor in (7, 8, 9):
        candidates += [str(p) for p in sorted(pyenv.glob(f"3.{minor}.*/bin/python3"))]
        candidates += [found for found in [shutil.which(f"python3.{minor}")] if found]
    for candidate in candidates:
        probe = subprocess.run([candidate, "-c", "import venv"], check=False, capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def main() -> None:
    """Build every engine venv (``python -m tests.engines.venvs``), e.g. ahead of the tests."""
    build("pytes0", PYTES_0)
    build("snakemake", SNAKEMAKE, wheels=SNAKEMAKE_WHEELS)
    build("toil", TOIL)


if __name__ == "__main__":
    main()
