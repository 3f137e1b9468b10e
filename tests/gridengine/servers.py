"""The session's Grid Engine cluster and a jobgate server that submits to it.

A pytest plugin (loaded by ``tests/conftest.py``, as a site of :mod:`tests.sites`), so that
the contract suite at the top of ``tests/`` and the Grid Engine tests share one cluster
and one server; they start when a test first asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.gridengine.cluster import GridEngineCluster, unavailable


@pytest.fixture(scope="session")
def gridengine_cluster() -> Iterator[GridEngineCluster]:
    """The machine's single-node Grid Engine cluster, started (or reused) for the session;
    skips when Grid Engine can't run here."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = GridEngineCluster()
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        pytest.fail(f"the test Grid Engine cluster did not start: {exc}")
    yield cluster
    cluster.stop()


def gridengine_env(cluster: GridEngineCluster, shared: Path, **extra: str) -> dict[str, str]:
    """Environment of a jobgate server whose default backend is the test cluster."""
    return {
        "SGE_ROOT": cluster.env["SGE_ROOT"],
        "SGE_CELL": cluster.env["SGE_CELL"],
        "JOBGATE_BACKEND": "gridengine",
        "JOBGATE_GRIDENGINE_SHARED_DIR": str(shared),
        "JOBGATE_GRIDENGINE_QUEUE": cluster.queue,
        "JOBGATE_GRIDENGINE_PE": cluster.pe,
        "JOBGATE_POLL_INTERVAL": "0.3",
        **extra,
    }


@pytest.fixture(scope="session")
def gridengine_server(
    gridengine_cluster: GridEngineCluster,
    tmp_path_factory: pytest.TempPathFactory,
    allowed_dir: Path,
) -> Iterator[Server]:
    """One jobgate server for the session, submitting to the test cluster by default."""
    base = tmp_path_factory.mktemp("gesrv")
    env = gridengine_env(gridengine_cluster, base / "shared", JOBGATE_ALLOWED_DIRS=str(allowed_dir))
    srv = Server(base / "data", env).start()
    yield srv
    srv.stop()
