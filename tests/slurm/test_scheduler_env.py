"""Executors of a Slurm job see their scheduler: its job variables pass into the sandbox."""

from __future__ import annotations

import httpx
import pytest

from jobgate.runner.schedenv import scheduler_env
from tests.support import run, sh, system_logs

pytestmark = pytest.mark.xdist_group("slurm")


def test_executors_get_slurms_job_variables(slurm_tes: httpx.Client) -> None:
    done = run(
        slurm_tes,
        {
            "executors": [
                sh("env | grep -E '^SLURM_(JOB_ID|NTASKS|JOB_NUM_NODES|CPUS_ON_NODE)=' | sort"),
                # The executor's own env wins over the scheduler's.
                {**sh("echo $SLURM_JOB_NAME"), "env": {"SLURM_JOB_NAME": "mine"}},
            ],
            "resources": {"backend_parameters": {"ntasks": "2"}},
        },
        timeout=120,
    )
    assert done["state"] == "COMPLETE", system_logs(done)
    job_id = done["logs"][-1]["metadata"]["slurm_job_id"]
    seen = dict(line.split("=", 1) for line in done["logs"][-1]["logs"][0]["stdout"].splitlines())
    assert seen["SLURM_JOB_ID"] == str(job_id)
    assert seen["SLURM_NTASKS"] == "2"
    assert seen["SLURM_JOB_NUM_NODES"] == "1"
    assert int(seen["SLURM_CPUS_ON_NODE"]) >= 2
    assert done["logs"][-1]["logs"][1]["stdout"] == "mine\n"


def test_which_scheduler_variables_pass() -> None:
    slurm = {"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "n1", "PMIX_RANK": "0", "HOME": "/root"}
    assert scheduler_env(slurm) == {"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "n1", "PMIX_RANK": "0"}
    gridengine = {
        "SGE_ROOT": "/var/lib/gridengine",
        "SGE_O_HOME": "/root",
        "JOB_ID": "12",
        "NSLOTS": "4",
        "PE_HOSTFILE": "/var/spool/pe_hostfile",
        "PATH": "/bin",
    }
    assert scheduler_env(gridengine) == {
        "SGE_ROOT": "/var/lib/gridengine",
        "JOB_ID": "12",
        "NSLOTS": "4",
        "PE_HOSTFILE": "/var/spool/pe_hostfile",
    }
    # JOB_ID means Grid Engine's only under Grid Engine.
    assert scheduler_env({"JOB_ID": "12"}) == {}
