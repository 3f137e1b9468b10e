"""Python client for jobgate: the native jobs API and GA4GH TES, sync and async.

    from jobgate.client import Client

    with Client() as jg:                       # JOBGATE_URL / config file / 127.0.0.1:8000
        job = jg.submit({"name": "hi", "script": "echo hello"})
        job = jg.wait(job.id, timeout=60)
        print(job.state, job.exit_code, job.stdout)

Errors are typed (:mod:`jobgate.client.errors`); bulk calls return a :class:`BulkResult`
whose items carry their own error.
"""

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from jobgate.client.aio import AsyncClient
    from jobgate.client.models import BulkItem, BulkResult, Event, Job, SearchPage
    from jobgate.client.sync import Client
    from jobgate.domain.native import JobRequest, RangeParam
    from jobgate.domain.query import Filter, Sort
    from jobgate.domain.states import FINAL, State

# The clients, models (pydantic) and httpx load on first use: importing the configuration
# or the errors (what ``jobgate.cli_fast`` needs) stays cheap.
_LAZY = {
    "AsyncClient": "jobgate.client.aio",
    "Client": "jobgate.client.sync",
    **dict.fromkeys(
        ("BulkItem", "BulkResult", "Event", "Job", "SearchPage"), "jobgate.client.models"
    ),
    **dict.fromkeys(("JobRequest", "RangeParam"), "jobgate.domain.native"),
    **dict.fromkeys(("Filter", "Sort"), "jobgate.domain.query"),
    **dict.fromkeys(("FINAL", "State"), "jobgate.domain.states"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
