"""The operator's lifecycle settings as the job service and the dispatcher use them."""

from __future__ import annotations

from collections.abc import Callable

from jobgate.auth.jobtokens import JobTokens
from jobgate.backends.base import Backend
from jobgate.config import Settings
from jobgate.domain.lifecycle import TIMED_STATES, Limits
from jobgate.domain.models import Job


def limits_of(settings: Settings) -> Limits:
    """``JOBGATE_*`` retry, timeout and heartbeat settings as :class:`Limits`."""
    group = settings.lifecycle
    return Limits(
        max_retries=group.max_retries,
        default_retries=min(group.default_retries, group.max_retries),
        default_retry_on=group.default_retry_on,
        retry_backoff=group.retry_backoff,
        default_timeouts={s: getattr(group, f"{s}_timeout") for s in TIMED_STATES},
        max_timeouts={s: getattr(group, f"max_{s}_timeout") for s in TIMED_STATES},
        heartbeat_timeout=group.heartbeat_timeout,
    )


def gateway_url(settings: Settings) -> str:
    """The gateway's URL as jobs see it: ``JOBGATE_PUBLIC_URL``, else its listen address."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def job_environment(tokens: JobTokens, base: str) -> Callable[[Job, Backend], None]:
    """What the dispatcher adds to each executor's environment: ``JOBGATE_JOB_ID``,
    ``JOBGATE_JOB_URL`` (the job's native URL; PATCH ``…/heartbeat``) and
    ``JOBGATE_JOB_TOKEN`` (good for that job's heartbeats only); where the backend shows
    the gateway's job socket, ``JOBGATE_JOB_SOCKET`` and ``JOBGATE_JOB_PATH`` (the URL's
    path, to send through it). Never stored."""

    def add(job: Job, backend: Backend) -> None:
        extra = {
            "JOBGATE_JOB_ID": job.id,
            "JOBGATE_JOB_URL": f"{base}/api/v1/jobs/{job.id}",
            "JOBGATE_JOB_TOKEN": tokens.issue(job.id),
        }
        socket = backend.job_socket(job)
        if socket is not None:
            # A sandbox without network reaches the gateway here: the same route by the
            # path alone (curl --unix-socket "$JOBGATE_JOB_SOCKET" "http://jobgate$…PATH").
            extra["JOBGATE_JOB_SOCKET"] = socket
            extra["JOBGATE_JOB_PATH"] = f"/api/v1/jobs/{job.id}"
        for executor in job.executors:
            executor.env = {**extra, **(executor.env or {})}

    return add
