"""Python client for jobgate: the native jobs API and GA4GH TES, sync and async.

    from jobgate.client import Client

    with Client() as jg:                       # JOBGATE_URL / config file / 127.0.0.1:8000
        job = jg.submit({"name": "hi", "script": "echo hello"})
        job = jg.wait(job.id, timeout=60)
        print(job.state, job.exit_code, job.stdout)

Errors are typed (:mod:`jobgate.client.errors`); bulk calls return a :class:`BulkResult`
whose items carry their own error.
"""

from jobgate.client.aio import AsyncClient
from jobgate.client.config import ClientConfig, config_path, resolve
from jobgate.client.errors import (
    ApiError,
    BulkError,
    ConfigError,
    Conflict,
    ConnectionFailed,
    ErrorDetail,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    JobgateClientError,
    NotFound,
    ServerError,
    Unauthorized,
    WaitTimeout,
)
from jobgate.client.models import BulkItem, BulkResult, Event, Job, SearchPage
from jobgate.client.sync import Client
from jobgate.domain.native import JobRequest, RangeParam
from jobgate.domain.query import Filter, Sort
from jobgate.domain.states import FINAL, State

__all__ = [
    "FINAL",
    "ApiError",
    "AsyncClient",
    "BulkError",
    "BulkItem",
    "BulkResult",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "ErrorDetail",
    "Event",
    "Filter",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "Job",
    "JobRequest",
    "JobgateClientError",
    "NotFound",
    "RangeParam",
    "SearchPage",
    "ServerError",
    "Sort",
    "State",
    "Unauthorized",
    "WaitTimeout",
    "config_path",
    "resolve",
]
