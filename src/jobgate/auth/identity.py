"""Who is calling: the result of authentication, the input of the policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Scope(StrEnum):
    """What a caller may do. ``submit`` includes reading; ``admin`` includes everything."""

    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"


IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.SUBMIT: frozenset({Scope.READ, Scope.SUBMIT}),
    Scope.ADMIN: frozenset({Scope.READ, Scope.SUBMIT, Scope.ADMIN}),
}


def expand(scopes: set[Scope] | frozenset[Scope]) -> frozenset[Scope]:
    """``scopes`` with what each implies (``submit`` → read+submit)."""
    out: set[Scope] = set()
    for s in scopes:
        out |= IMPLIED[s]
    return frozenset(out)


def plain_group(name: str) -> str:
    """IAM's ``/src/production`` and ``src/production`` are one group."""
    return name.strip().strip("/")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller.

    ``name`` is None only for the anonymous caller of ``JOBGATE_AUTH=none``. ``credential``
    is the bearer token the request carried (forwarded to backends that need one); it is
    left out of ``repr`` so it cannot reach a log line by accident.
    """

    name: str | None
    method: str
    scopes: frozenset[Scope]
    groups: frozenset[str] = frozenset()
    credential: str | None = field(default=None, repr=False, compare=False)

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "method": self.method,
            "scopes": sorted(self.scopes),
            "groups": sorted(self.groups),
            "admin": self.admin,
        }


ANONYMOUS_ADMIN = Caller(None, "none", expand({Scope.ADMIN}))
"""The caller of ``JOBGATE_AUTH=none``: no name, allowed everything (as before auth)."""
