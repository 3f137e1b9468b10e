"""The session's Slurm cluster and the jobgate server that submits to it.

A pytest plugin (loaded by ``tests/conftest.py``), so that the contract suite at the top
of ``tests/`` and the Slurm tests share one cluster; it starts when a test first asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.slurm.cluster import SlurmCluster, unavailable


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One real single-node cluster for the session; skips when Slurm can't run here."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        pytest.fail(f"the test Slurm cluster did not start: {exc}")
    yield cluster
    cluster.stop()


def slurm_env(cluster: SlurmCluster, shared: Path, **extra: str) -> dict[str, str]:
    """Environment of a jobgate server whose default backend is the test cluster."""
    return {
        "SLURM_CONF": str(cluster.conf),
        "JOBGATE_BACKEND": "slurm",
        "JOBGATE_SLURM_SHARED_DIR": str(shared),
        "JOBGATE_POLL_INTERVAL": "0.3",
        **extra,
    }


@pytest.fixture(scope="session")
def slurm_server(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory, allowed_dir: Path
) -> Iterator[Server]:
    """One jobgate server for the session, submitting to the test cluster by default."""
    base = tmp_path_factory.mktemp("slurmsrv")
    env = slurm_env(slurm_cluster, base / "shared", JOBGATE_ALLOWED_DIRS=str(allowed_dir))
    srv = Server(base / "data", env).start()
    yield srv
    srv.stop()
