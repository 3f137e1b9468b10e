"""Search and summary requests of the native API (validated once, used by the store)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from jobgate.domain import limits as lim
from jobgate.domain.models import _Model

# Fields a search may filter, sort and group on; ``labels.<key>`` addresses one label.
SCALAR_FIELDS = (
    "id",
    "state",
    "owner",
    "name",
    "backend",
    "group",
    "priority",
    "created_at",
    "updated_at",
    "reschedules",
    "attempt",
    "retries",
    "stalled",
)
RETURNABLE = (*SCALAR_FIELDS, "detail", "app_status", "labels", "spec", "logs")
DEFAULT_FIELDS = (
    "id",
    "state",
    "name",
    "owner",
    "backend",
    "group",
    "priority",
    "created_at",
    "updated_at",
    "detail",
    "labels",
)
# Bounds on one request, so every accepted request is one the database can run: SQLite
# refuses statements past a depth or size, and each filter adds a condition (a label one a
# subquery). Documented in the README's search section.
MAX_FILTERS = lim.FILTERS
"""Filters in one search or summary (TES ``tag_key`` filters too)."""
MAX_IN_VALUES = lim.IN_VALUES
"""Values in one ``in`` / ``not_in`` list."""
MAX_VALUE_LENGTH = lim.SEARCH_VALUE
"""Characters in one filter value, and in a ``labels.<key>`` field name."""

LABEL = re.compile(r"^(?:labels|tags)\.(.+)$")
Op = Literal["eq", "neq", "in", "not_in", "gt", "lt", "like"]


def check_field(name: str, *, allow_labels: bool = True) -> str:
    if name in SCALAR_FIELDS or (allow_labels and LABEL.match(name)):
        return name
    extra = ", labels.<key>" if allow_labels else ""
    raise ValueError(f"unknown field {name!r}; one of {', '.join(SCALAR_FIELDS)}{extra}")


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
        raise ValueError(f"a filter value has at most {MAX_VALUE_LENGTH} characters")
    return value


class Filter(_Model):
    field: str = Field(max_length=MAX_VALUE_LENGTH)
    op: Op = "eq"
    value: Any

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        return check_field(value)

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: Any) -> Any:
        op = info.data.get("op", "eq")
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"'{op}' needs a non-empty list")
            if len(value) > MAX_IN_VALUES:
                raise ValueError(f"'{op}' takes at most {MAX_IN_VALUES} values")
            for item in value:
                _short(item)
                if isinstance(item, list | dict):
                    raise ValueError(f"'{op}' needs a list of single values")
        elif isinstance(value, list | dict):
            raise ValueError(f"'{op}' needs a single value")
        return _short(value)


class Sort(_Model):
    field: str
    direction: Literal["asc", "desc"] = "desc"

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        return check_field(value, allow_labels=False)


class SearchRequest(_Model):
    filters: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)
    sort: list[Sort] = Field(default_factory=lambda: [Sort(field="created_at")], max_length=3)
    fields: list[str] | None = Field(default=None, max_length=len(RETURNABLE))
    limit: lim.Int = Field(default=100, ge=1, le=10_000)
    cursor: str | None = Field(default=None, max_length=lim.TEXT)

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in RETURNABLE:
                raise ValueError(f"unknown field {name!r}; one of {', '.join(RETURNABLE)}")
        return value


class SummaryRequest(_Model):
    group_by: list[str] = Field(min_length=1, max_length=4)
    filters: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)

    @field_validator("group_by")
    @classmethod
    def _group(cls, value: list[str]) -> list[str]:
        return [check_field(v) for v in value]
