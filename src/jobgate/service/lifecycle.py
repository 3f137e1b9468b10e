"""The operator's lifecycle settings as the job service and the dispatcher use them."""

from __future__ import annotations

from jobgate.config import Settings
from jobgate.domain.lifecycle import TIMED_STATES, Limits


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
