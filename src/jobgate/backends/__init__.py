"""Backends: where jobs run (local machine today; Slurm, Pulsar, TES, Kubernetes next)."""
