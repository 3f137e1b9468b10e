"""Credentials jobs carry to their backends: stored encrypted, revealed only to a backend."""

from __future__ import annotations

from jobgate.auth.secrets import SecretBox
from jobgate.store.jobs import JobStore


class JobCredentials:
    """The bearer token a job's submitter authenticated with, for backends that need it."""

    def __init__(self, store: JobStore, box: SecretBox) -> None:
        self.store = store
        self.box = box

    async def reveal(self, job_id: str) -> str | None:
        """The job's token in clear; None if it carries none (or the key has changed)."""
        sealed = await self.store.credential(job_id)
        return None if sealed is None else self.box.decrypt(sealed)
