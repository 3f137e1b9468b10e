"""Checking backend_parameters values against a scheduler's strict patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from jobgate.domain.models import Job


def check(
    params: Mapping[str, str], patterns: Mapping[str, re.Pattern[str]], help: Mapping[str, str]
) -> dict[str, str]:
    """Errors by key for values that don't match their pattern (keys without one pass);
    ``help`` says what each key expects."""
    errors = {}
    for key, value in params.items():
        pattern = patterns.get(key)
        if pattern is not None and not pattern.fullmatch(value):
            errors[key] = f"invalid value {value[:80]!r}: expected {help[key]}"
    return errors


def of_job(
    job: Job, patterns: Mapping[str, re.Pattern[str]], help: Mapping[str, str]
) -> dict[str, str]:
    """``job``'s backend_parameters but the routing key ``backend``.

    Raises ValueError naming each invalid one (the API validates them first; this guards
    the stored ones).
    """
    res = job.resources
    params = dict((res.backend_parameters or {}) if res else {})
    params.pop("backend", None)
    errors = check(params, patterns, help)
    if errors:
        raise ValueError("; ".join(f"backend_parameters.{k}: {v}" for k, v in errors.items()))
    return params


def set_fields(obj: object, keys: Iterable[str]) -> dict[str, str]:
    """The attributes of ``obj`` named in ``keys`` that are not None (a site's defaults)."""
    return {k: v for k in keys if (v := getattr(obj, k)) is not None}
