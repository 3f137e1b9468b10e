"""The Grid Engine backend (SGE, Son of Grid Engine): jobs run on exec hosts via qsub."""

from jobgate.backends.gridengine.backend import GridEngineBackend, GridEngineConfig

__all__ = ["GridEngineBackend", "GridEngineConfig"]
