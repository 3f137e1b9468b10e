"""The base every batch-scheduler backend (Slurm, Grid Engine) is built on."""
