"""What a batch scheduler tells its job, passed on to the task's executors.

The sandbox gives executors a clean environment; on a batch node the scheduler's job
variables are what programs that span nodes or cores (``srun``, MPI launchers, tools that
size their threads by ``NSLOTS``/``SLURM_CPUS_ON_NODE``) read, so these pass:

- Slurm: every ``SLURM_*`` and ``SLURMD_NODENAME`` (``SLURM_JOB_ID``, ``SLURM_NODELIST``,
  ``SLURM_NTASKS``, ``SLURM_CPUS_ON_NODE``, ``SLURM_JOB_NUM_NODES``, …), and the process
  managers' ``PMI_*``/``PMIX_*`` where set.
- Grid Engine: ``JOB_ID``, ``JOB_NAME``, ``NSLOTS``, ``NHOSTS``, ``NQUEUES``, ``QUEUE``,
  ``PE``, ``PE_HOSTFILE``, ``RESTARTED`` and every ``SGE_*`` but the submit-time copies
  ``SGE_O_*``; the file ``PE_HOSTFILE`` names is shown read-only at its own path.

An executor's own ``env`` wins over these. Standard library only (the node runner's start).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobgate.runtimes.base import Mount

SLURM_PREFIXES = ("SLURM_", "PMI_", "PMIX_")
SLURM_NAMES = frozenset({"SLURMD_NODENAME"})
GRIDENGINE_NAMES = frozenset(
    {"JOB_ID", "JOB_NAME", "NSLOTS", "NHOSTS", "NQUEUES", "QUEUE", "PE", "PE_HOSTFILE", "RESTARTED"}
)


def _under_gridengine(env: Mapping[str, str]) -> bool:
    return any(k in env for k in ("SGE_ROOT", "SGE_CELL", "SGE_TASK_ID"))


def scheduler_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` (a batch job's environment) its executors receive."""
    out = {k: v for k, v in env.items() if k.startswith(SLURM_PREFIXES) or k in SLURM_NAMES}
    if _under_gridengine(env):
        for k, v in env.items():
            if k in GRIDENGINE_NAMES or (k.startswith("SGE_") and not k.startswith("SGE_O_")):
                out[k] = v
    return out


def scheduler_files(env: Mapping[str, str]) -> list[str]:
    """Files the scheduler's variables name that executors must read (read-only, at their
    own path): Grid Engine's parallel environment host file."""
    hostfile = env.get("PE_HOSTFILE") if _under_gridengine(env) else None
    if hostfile and os.path.isabs(hostfile) and os.path.isfile(hostfile):
        return [hostfile]
    return []


def scheduler_mounts(env: Mapping[str, str]) -> list[Mount]:
    """:func:`scheduler_files` as mounts."""
    from pathlib import Path

    from jobgate.runtimes.base import Mount

    return [Mount(Path(f), f, readonly=True) for f in scheduler_files(env)]
