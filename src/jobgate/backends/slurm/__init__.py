"""The Slurm backend (issue 7): jobs run on a Slurm cluster's nodes via sbatch."""

from jobgate.backends.slurm.backend import SlurmBackend, SlurmConfig

__all__ = ["SlurmBackend", "SlurmConfig"]
