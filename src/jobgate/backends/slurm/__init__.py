"""The Slurm backend: jobs run on a Slurm cluster's nodes via sbatch."""

from jobgate.backends.slurm.backend import SlurmBackend, SlurmConfig

__all__ = ["SlurmBackend", "SlurmConfig"]
