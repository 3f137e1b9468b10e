"""What every runtime raises, and the PATH executors start with: a module of its own, in
the standard library alone, so that the batch node runner can use them without the rest
of the runtime layer (see ``runtimes/argv.py``)."""

from __future__ import annotations

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UnsupportedTask(ValueError):
    """The task asks for something this runtime cannot give (a SYSTEM_ERROR, with this text)."""


class RuntimeFailure(RuntimeError):
    """The runtime could not start the executor (image pull, engine error): SYSTEM_ERROR,
    with this text, which carries the runtime's own message."""
