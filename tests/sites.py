"""The backends and runtimes the TES contract suite (``tests/test_contract.py``) runs on.

Each :class:`Site` names a session fixture that yields a started :class:`tests.conftest.Server`
whose default backend and runtime are the site's. Adding a backend is one entry in
:data:`SITES`: its fixture lives in a plain module (``plugin``), which ``tests/conftest.py``
loads as a pytest plugin so that the suite at the top of ``tests/`` sees it, and the fixture
is started only when a test of that site is selected. The fixture skips with a reason when
the backend cannot run here (not installed, not root); see the Slurm and Grid Engine
entries (``tests/<backend>/servers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import requires_bwrap


@dataclass(frozen=True)
class Site:
    id: str
    """The test id: ``<backend>-<runtime>``, or the backend's name for batch systems."""
    backend: str
    """The name the task logs' ``metadata.backend`` carry."""
    fixture: str
    """A session fixture yielding the site's started server (``JOBGATE_ALLOWED_DIRS`` set)."""
    plugin: str | None = None
    """The module defining ``fixture`` (and what it needs), when not ``tests/conftest.py``."""
    native_id: str | None = None
    """The ``metadata`` key of the id the backend gave the task (a scheduler's job id)."""
    runtime: str | None = None
    """The runtime the task logs' ``metadata.runtime`` name, where the site fixes one."""
    isolated: bool = True
    """Executors see container paths (``/data/...``) and a private ``/tmp``; the process
    runtime maps neither (commands reach their files by relative paths)."""
    slots: int | None = 4
    """Tasks of one CPU core the site runs at once (the test servers' ``JOBGATE_SLOTS``);
    None where the gateway hands every task to a scheduler at once."""
    marks: tuple[Any, ...] = field(default=())

    def __post_init__(self) -> None:
        # pytest refuses a conftest also loaded as a plugin ("Plugin already registered"),
        # and a conftest's fixtures are not seen above its directory.
        assert not (self.plugin or "").endswith("conftest"), (
            f"site {self.id}: move {self.fixture} from {self.plugin} into a plain module "
            "(e.g. tests/<backend>/servers.py) and name that module here"
        )

    def param(self) -> Any:
        return pytest.param(self, id=self.id, marks=self.marks)


SITES = [
    Site("local-bwrap", "local", "server", runtime="bwrap", marks=(requires_bwrap,)),
    Site("local-process", "local", "process_server", runtime="process", isolated=False),
    Site(
        "local-podman",
        "local",
        "podman_server",
        plugin="tests.containers.servers",
        runtime="podman",
    ),
    Site(
        "slurm",
        "slurm",
        "slurm_server",
        plugin="tests.slurm.servers",
        native_id="slurm_job_id",
        slots=None,
    ),
    Site(
        "gridengine",
        "gridengine",
        "gridengine_server",
        plugin="tests.gridengine.servers",
        native_id="gridengine_job_id",
        slots=None,
    ),
    Site(
        "pulsar",
        "pulsar",
        "pulsar_server",
        plugin="tests.pulsar.servers",
        native_id="pulsar_job_id",
        isolated=False,
        slots=None,
    ),
    Site(
        "pulsar-amqp",
        "pulsar",
        "amqp_pulsar_server",
        plugin="tests.pulsar.servers",
        native_id="pulsar_job_id",
        isolated=False,
        slots=None,
    ),
]
