"""Checking backend_parameters values against a scheduler's strict patterns."""

from __future__ import annotations

import re
from collections.abc import Mapping


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
