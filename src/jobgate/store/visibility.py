"""Which jobs a query may return: the SQL side of the authorization policy (auth/policy.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_

from jobgate.store.schema import jobs


@dataclass(frozen=True, slots=True)
class Visibility:
    """A non-admin caller's jobs: those they own and those shared with one of their groups."""

    owner: str | None
    groups: frozenset[str] = frozenset()


Scope = Visibility | str | None
"""What store queries accept: a :class:`Visibility`, one owner (str), or None for all jobs."""


def scope_condition(scope: Scope) -> ColumnElement[bool] | None:
    """The WHERE condition of ``scope`` on ``jobs`` (None: no restriction)."""
    if scope is None:
        return None
    if isinstance(scope, str):
        return jobs.c.owner == scope
    # A caller without a name (anonymous) owns nothing: "owner = NULL" matches no row.
    own = jobs.c.owner == scope.owner
    if not scope.groups:
        return own
    return or_(own, jobs.c.share_group.in_(sorted(scope.groups)))
