"""Per-job credentials (``JOBGATE_JOB_TOKEN``): a job's executors report on that one job.

A token is ``jgjob.<job id>.<HMAC>``, checked without a database read (heartbeats must be
cheap). It grants no scope: only the job's own heartbeat route accepts it, and only while
the job is active (the heartbeat service refuses ended jobs), so it ends with the job.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "jgjob."


class JobTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, job_id: str) -> str:
        return f"{PREFIX}{job_id}.{self._mac(job_id)}"

    def verify(self, token: str) -> str | None:
        """The job id a valid token names, or None."""
        if not token.startswith(PREFIX):
            return None
        job_id, _, mac = token[len(PREFIX) :].rpartition(".")
        if not job_id or not hmac.compare_digest(mac, self._mac(job_id)):
            return None
        return job_id

    def _mac(self, job_id: str) -> str:
        return hmac.new(self._key, job_id.encode(), hashlib.sha256).hexdigest()[:40]
