"""What the dispatcher is given from above (it imports nothing from the service layer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from jobgate.runner.taskdir import TaskDir

CredentialSource = Callable[[str], Awaitable[str | None]]
"""Job id → its submitter's bearer token (decrypted), for backends that want one."""


class OutputPacker(Protocol):
    """Packs a job's ``output_sandbox`` from its task directory once it ended."""

    async def pack(
        self, job_id: str, owner: str | None, taskdir: TaskDir, patterns: list[str]
    ) -> tuple[object, list[str]]:
        """Pack the files matching ``patterns``; (what was kept, notes for the system logs).
        Raises JobgateError, OSError or tarfile.TarError when nothing could be kept."""
        ...
