"""The site the engine tests share: a jobgate configured as the README's "Workflow engines"
section says, with the bwrap sandbox on: a read-write host directory the engines share
with their tasks, a read-only one, every image on the host root, and every task run as
the account that runs the engines (which owns the shared directory)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Server

ENGINE_USER = (65534, 65534)
"""Who runs the engines here, and so every task: ``nobody``, which every host has."""


def owned_dir(prefix: str) -> Path:
    """A directory of the engine user's, where that user (not pytest's root) may work.
    Under /var/tmp: pytest's own directories are 0700 root."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chown(path, *ENGINE_USER)
    os.chmod(path, 0o755)
    return path


@dataclass
class EngineSite:
    server: Server
    shared: Path
    """The read-write host mount (``JOBGATE_HOST_MOUNTS=<shared>:rw``), the engine user's."""
    readonly: Path
    """A read-only host mount, root's."""
    allowed: Path
    """A directory ``file://`` inputs and outputs may be staged from and to
    (``JOBGATE_ALLOWED_DIRS``): where cwl-tes runs."""


@pytest.fixture(scope="session")
def engine_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineSite]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (make test installs it when run as root)")
    if os.geteuid() != 0:
        pytest.skip("runs tasks as another user: needs a root service")
    shared = owned_dir("jobgate-shared-")
    readonly = Path(tempfile.mkdtemp(prefix="jobgate-ro-", dir="/var/tmp"))
    os.chmod(readonly, 0o755)
    (readonly / "tool.txt").write_text("from the host\n")
    os.chmod(readonly / "tool.txt", 0o644)
    allowed = Path(tempfile.mkdtemp(prefix="jobgate-staged-", dir="/var/tmp"))
    server = Server(
        tmp_path_factory.mktemp("engines") / "data",
        {
            "JOBGATE_RUNTIME": "bwrap",
            "JOBGATE_HOST_MOUNTS": f"{shared}:rw,{readonly}:ro",
            "JOBGATE_IMAGE_MAP": "*=dir:/",
            "JOBGATE_TASK_USER": "{}:{}".format(*ENGINE_USER),
            "JOBGATE_POLL_INTERVAL": "0.2",
            "JOBGATE_ALLOWED_DIRS": str(allowed),
        },
    ).start()
    yield EngineSite(server, shared, readonly, allowed)
    server.stop()
    shutil.rmtree(allowed, ignore_errors=True)
    shutil.rmtree(shared, ignore_errors=True)
    shutil.rmtree(readonly, ignore_errors=True)
