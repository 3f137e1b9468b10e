"""An executor of a Slurm job that asked for several tasks starts them with ``srun``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Server
from tests.slurm.cluster import SlurmCluster
from tests.slurm.servers import slurm_env
from tests.support import run, sh, system_logs, tes_client

pytestmark = pytest.mark.xdist_group("slurm")


def test_srun_inside_a_task_starts_its_ranks(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # What srun needs in the sandbox: the network, munge's socket, the cluster's config.
    mounts = f"/run/munge:ro,{slurm_cluster.conf.parent}:ro"
    env = slurm_env(
        slurm_cluster,
        tmp_path / "shared",
        JOBGATE_EXECUTOR_NETWORK="true",
        JOBGATE_HOST_MOUNTS=mounts,
    )
    srv = Server(tmp_path / "data", env).start()
    try:
        with tes_client(srv, timeout=30) as client:
            done = run(
                client,
                {
                    "executors": [sh("srun -n 2 sh -c 'echo rank $SLURM_PROCID' | sort")],
                    "resources": {"backend_parameters": {"ntasks": "2"}},
                },
                timeout=120,
            )
    finally:
        srv.stop()
    assert done["state"] == "COMPLETE", system_logs(done) + str(done["logs"])
    log = done["logs"][-1]["logs"][0]
    assert log["stdout"] == "rank 0\nrank 1\n", log["stderr"]
