"""Which backends this service drives: built once from the settings."""

from __future__ import annotations

from jobgate.backends.base import Backend
from jobgate.backends.local import LocalBackend
from jobgate.config import Settings
from jobgate.runtimes.choice import make_runtime

DEFAULT_BACKEND = "local"


def make_backends(settings: Settings) -> dict[str, Backend]:
    """Backends by name. The dispatcher and the API route jobs by these names."""
    return {
        "local": LocalBackend(
            make_runtime(settings), slots=settings.slots, log_tail_bytes=settings.log_tail_bytes
        )
    }
