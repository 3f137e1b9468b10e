"""One error root; each error knows its HTTP status, and one handler maps them all."""

from __future__ import annotations

from typing import Any


class JobgateError(Exception):
    """Base of every error a caller may see. ``status`` is the HTTP status it maps to."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "status": self.status, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class InvalidRequest(JobgateError):
    """The request is malformed; ``errors`` lists each problem as ``{"where", "what"}``."""

    status = 400
    code = "invalid_request"


class PayloadTooLarge(JobgateError):
    """The request body is over a size limit (refused before it is read whole)."""

    status = 413
    code = "payload_too_large"


class JobNotFound(JobgateError):
    status = 404
    code = "not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no task with id {job_id!r}")
        self.job_id = job_id


class NotFound(JobgateError):
    """Something other than a job (a backend, a file) that the request names is not there."""

    status = 404
    code = "not_found"


class Conflict(JobgateError):
    status = 409
    code = "conflict"


class StagingError(JobgateError):
    """A transfer failed; the task ends in SYSTEM_ERROR with this message in system_logs."""

    status = 502
    code = "staging_failed"


class RuntimeFailure(JobgateError):
    """The runtime could not start an executor (not the executor's own failure)."""

    status = 500
    code = "runtime_failed"


class Unauthorized(JobgateError):
    """No valid credentials; ``headers`` carries the ``WWW-Authenticate`` challenge."""

    status = 401
    code = "unauthorized"


class Forbidden(JobgateError):
    """Authenticated, but the caller may not do this (never used to hide a job: that is 404)."""

    status = 403
    code = "forbidden"


class TooManyRequests(JobgateError):
    """Over a rate limit; ``headers`` carries ``Retry-After``."""

    status = 429
    code = "too_many_requests"
