"""Search and summary requests of the native API (validated once, used by the store)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

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
LABEL = re.compile(r"^(?:labels|tags)\.(.+)$")
Op = Literal["eq", "neq", "in", "not_in", "gt", "lt", "like"]


def check_field(name: str, *, allow_labels: bool = True) -> str:
    if name in SCALAR_FIELDS or (allow_labels and LABEL.match(name)):
        return name
    extra = ", labels.<key>" if allow_labels else ""
    raise ValueError(f"unknown field {name!r}; one of {', '.join(SCALAR_FIELDS)}{extra}")


class Filter(_Model):
    field: str
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
        elif isinstance(value, list | dict):
            raise ValueError(f"'{op}' needs a single value")
        return value


class Sort(_Model):
    field: str
    direction: Literal["asc", "desc"] = "desc"

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        return check_field(value, allow_labels=False)


class SearchRequest(_Model):
    filters: list[Filter] = Field(default_factory=list)
    sort: list[Sort] = Field(default_factory=lambda: [Sort(field="created_at")], max_length=3)
    fields: list[str] | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    cursor: str | None = None

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in RETURNABLE:
                raise ValueError(f"unknown field {name!r}; one of {', '.join(RETURNABLE)}")
        return value


class SummaryRequest(_Model):
    group_by: list[str] = Field(min_length=1, max_length=4)
    filters: list[Filter] = Field(default_factory=list)

    @field_validator("group_by")
    @classmethod
    def _group(cls, value: list[str]) -> list[str]:
        return [check_field(v) for v in value]
