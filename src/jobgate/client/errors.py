"""Typed client errors: one class per kind of answer, each with a readable message.

Server errors arrive as ``{"code", "status", "message", "errors": [{"where", "what"}]}``;
:func:`from_body` turns such a body (a whole response, or one failed item of a bulk call)
into the matching exception, so callers can ``except NotFound`` instead of reading codes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

# httpx is imported where a response or transport error is read: the CLI's quick commands
# build these errors from the standard library's http.client without loading it.
if TYPE_CHECKING:
    import httpx

    from jobgate.client.models import BulkItem, Job

MAX_LISTED = 10
"""How many ``where: what`` items an error message spells out (all stay in ``.errors``)."""


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One problem of a request: where it is (``body.executors[0].image``) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what


class JobgateClientError(Exception):
    """Root of every error the client raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        errors: Sequence[ErrorDetail] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.errors = list(errors)

    def __str__(self) -> str:
        lines = [self.message]
        # The server's message often already is the first error; don't say it twice.
        details = [str(e) for e in self.errors[:MAX_LISTED] if str(e) != self.message]
        lines += [f"  {d}" for d in details]
        if len(self.errors) > MAX_LISTED:
            lines.append(f"  … and {len(self.errors) - MAX_LISTED} more")
        return "\n".join(lines)


class ConfigError(JobgateClientError):
    """The client's configuration (file, URL) is unusable."""


class ConnectionFailed(JobgateClientError):
    """The server could not be reached or did not answer in time (nothing was decided)."""


class ApiError(JobgateClientError):
    """The server answered with an error status."""


class InvalidRequest(ApiError):
    """400: the request (or one bulk item) is malformed; ``.errors`` says where and what."""


class Unauthorized(ApiError):
    """401: no or a bad token (set ``JOBGATE_TOKEN`` or ``token`` in the config file)."""


class Forbidden(ApiError):
    """403: the token is valid but may not do this."""


class NotFound(ApiError):
    """404: no such job (or endpoint)."""


class Conflict(ApiError):
    """409: the job's state does not allow this (e.g. deleting a running job)."""


class IdempotencyKeyReused(ApiError):
    """422: this Idempotency-Key was already used with a different request body."""


class ServerError(ApiError):
    """5xx: the server failed; the request may be retried."""


class WaitTimeout(JobgateClientError, TimeoutError):
    """:meth:`Client.wait` gave up; ``.pending`` are the ids still not final."""

    def __init__(self, message: str, *, pending: Sequence[str], done: Sequence[Job]) -> None:
        super().__init__(message)
        self.pending = list(pending)
        self.done = list(done)


class BulkError(JobgateClientError):
    """Raised by :meth:`BulkResult.raise_for_errors`; ``.failures`` are the failed items."""

    def __init__(self, failures: Sequence[BulkItem], total: int) -> None:
        lines = [
            f"[{f.index}] {f.id + ': ' if f.id else ''}{str(f.error).splitlines()[0]}"
            for f in failures[:MAX_LISTED]
        ]
        super().__init__(
            f"{len(failures)} of {total} items failed",
            errors=[ErrorDetail("", line) for line in lines],
        )
        self.failures = list(failures)


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def from_body(body: Any, status: int | None = None) -> ApiError:
    """The exception for an error body ``{code, status, message, errors}``."""
    if not isinstance(body, dict):
        body = {"message": str(body)}
    status = int(body.get("status") or status or 500)
    code = body.get("code")
    if code == "idempotency_key_reused":
        cls: type[ApiError] = IdempotencyKeyReused
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, InvalidRequest if status == 422 else ApiError)
    errors = [
        ErrorDetail(str(e.get("where", "")), str(e.get("what", "")))
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    message = str(body.get("message") or f"HTTP {status}")
    return cls(message, status=status, code=code, errors=errors)


def from_response(resp: httpx.Response) -> ApiError:
    """The exception for an error response (JSON error body, or whatever text came)."""
    return from_answer(resp.status_code, resp.content, resp.reason_phrase)


def from_answer(status: int, content: bytes, reason: str) -> ApiError:
    """The exception for an error status with this body (JSON error body, or its text)."""
    try:
        body = json.loads(content)
    except ValueError:
        text = content.decode(errors="replace").strip()[:300] or reason
        body = {"message": f"HTTP {status}: {text}"}
    return from_body(body, status)


Failure = Literal["timeout", "connect", "lost"]


def connection_failed(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    """A readable message for a transport failure, with the likely fix."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return transport_failed(url, "timeout", type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return transport_failed(url, "connect", str(exc))
    return transport_failed(url, "lost", str(exc))


TLS_CLOSED = (
    "EOF occurred in violation of protocol",
    "UNEXPECTED_EOF_WHILE_READING",
    "Server disconnected without sending a response",  # httpx
    "Remote end closed connection without response",  # http.client
    "Connection reset by peer",  # the close met the request
)
"""How OpenSSL and httpx report a server that closed the connection without a word: what
a TLS server does with a client certificate it does not accept."""


def transport_failed(url: str, failure: Failure, detail: str) -> ConnectionFailed:
    """The error for a failure to talk to ``url``; ``detail`` names the timeout or the cause."""
    if url.startswith("https:") and any(words in detail for words in TLS_CLOSED):
        return ConnectionFailed(
            f"lost the connection to jobgate at {url}: {detail} (so a TLS server ends one "
            "when it does not accept the client certificate sent, or needs one: not from a "
            "CA it trusts, or not signed by its issuer's key)"
        )
    if failure == "timeout":
        return ConnectionFailed(f"jobgate at {url} did not answer in time ({detail})")
    if failure == "connect":
        return ConnectionFailed(
            f"cannot reach jobgate at {url}: is `jobgate serve` running? "
            "(set the address with --url or JOBGATE_URL)"
        )
    return ConnectionFailed(f"lost the connection to jobgate at {url}: {detail}")
