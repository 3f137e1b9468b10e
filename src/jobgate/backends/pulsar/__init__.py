"""Galaxy Pulsar servers as a backend: REST (polled in batches) or message queues."""

from jobgate.backends.pulsar.backend import PulsarBackend, PulsarConfig

__all__ = ["PulsarBackend", "PulsarConfig"]
