"""Owner names: ``<namespace>:<name>``, so the same name from two sources is two owners.

Namespaces: one per trusted OIDC issuer (its alias, given as ``alias=url`` in
``JOBGATE_OIDC_ISSUERS`` or derived from the URL), ``basic`` for users of the users file,
``token`` for service tokens made for a bare name (robots), ``x509`` for client
certificates (``x509:<subject DN>``), ``unix`` for the UNIX socket's owner, and ``jobgate``
for the bootstrap admin token, which no OIDC or basic identity can spell. Issuers given the same
alias share one namespace: the administrator's explicit choice.

Groups: an OIDC caller's groups are qualified the same way (``iam:src/team``); groups of
basic users and service tokens are the operator's own and stay bare. A group setting
(``JOBGATE_ADMIN_GROUPS`` …) written ``ns:group`` means that namespace's group; a bare one
means the local group and, when exactly one OIDC namespace is configured, its group too.

This module imports nothing else of jobgate: settings validate with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

BASIC = "basic"
TOKEN = "token"
SYSTEM = "jobgate"
X509 = "x509"
UNIX = "unix"
RESERVED = frozenset({BASIC, TOKEN, SYSTEM, X509, UNIX})
BOOTSTRAP_ADMIN = f"{SYSTEM}:admin"
"""The bootstrap admin token's owner: no OIDC issuer or basic user can produce it."""

_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def norm_url(url: str) -> str:
    return url.strip().rstrip("/")


def derived_alias(url: str) -> str:
    """``https://iam.example.org/realms/x`` → ``iam.example.org/realms/x``; a port joins
    with ``-`` (``127.0.0.1-8080``) since ``:`` ends a namespace."""
    parts = urlsplit(norm_url(url))
    host = (parts.hostname or "").lower()
    if parts.port is not None:
        host += f"-{parts.port}"
    return host + parts.path.rstrip("/")


def issuer_namespaces(entries: Iterable[str]) -> dict[str, str]:
    """``JOBGATE_OIDC_ISSUERS`` entries (``url`` or ``alias=url``) → {issuer URL: namespace}.

    Raises ValueError for a reserved or malformed alias, for a URL given twice, and for
    two URLs whose derived aliases coincide (``http``/``https`` of one host): those must
    be named explicitly, so that no namespace is shared by accident.
    """
    out: dict[str, str] = {}
    derived: dict[str, str] = {}
    for entry in entries:
        alias, sep, url = entry.partition("=")
        explicit = bool(sep)
        if not explicit:
            alias, url = derived_alias(entry), entry
        alias, url = alias.strip(), norm_url(url)
        if not urlsplit(url).scheme or not urlsplit(url).hostname:
            raise ValueError(f"OIDC issuer {entry!r}: expected a URL or alias=URL")
        if not _ALIAS.match(alias):
            raise ValueError(
                f"OIDC issuer alias {alias!r}: use letters, digits, '.', '_', '-', '/'"
            )
        if alias in RESERVED:
            raise ValueError(
                f"OIDC issuer alias {alias!r} is reserved ({', '.join(sorted(RESERVED))})"
            )
        if url in out:
            raise ValueError(f"OIDC issuer {url} is listed twice")
        if not explicit:
            if alias in derived:
                raise ValueError(
                    f"OIDC issuers {derived[alias]} and {url} would share the namespace "
                    f"{alias!r}; name them (alias=url), the same alias only on purpose"
                )
            derived[alias] = url
        out[url] = alias
    return out


def qualify(namespace: str, name: str) -> str:
    return f"{namespace}:{name}"


def namespace_of(owner: str) -> str | None:
    """The namespace of a full owner name; None for a bare name."""
    ns, sep, _ = owner.partition(":")
    return ns if sep else None


def token_owner(owner: str, known: Iterable[str]) -> str:
    """The full owner a service token made for ``owner`` acts as.

    A bare name is a robot of the ``token`` namespace; a full name (``iam:alice``) is
    taken as written, so an admin can make a token act for an OIDC or basic user. Raises
    ValueError for a namespace that is not configured (a typo would make an owner nobody is).
    """
    ns = namespace_of(owner)
    if ns is None:
        return qualify(TOKEN, owner)
    known_set = set(known) | RESERVED
    if ns not in known_set or not owner.partition(":")[2]:
        raise ValueError(
            f"owner {owner!r}: the namespace must be one of {', '.join(sorted(known_set))} "
            "followed by a name, or give a bare name for a robot (token:<name>)"
        )
    return owner


def bare_owner_values(value: str, known: Iterable[str]) -> list[str]:
    """What a search for owner ``value`` means: a full name itself; a bare name, that name
    in every namespace (visibility still limits what a caller gets)."""
    if namespace_of(value) is not None:
        return [value]
    return [qualify(ns, value) for ns in sorted(set(known) | RESERVED)]


@dataclass(frozen=True, slots=True)
class GroupRule:
    """Which caller groups satisfy each entry of a group setting."""

    entries: tuple[str, ...]
    accepted: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, entries: Iterable[str], oidc_namespaces: Iterable[str]) -> GroupRule:
        sole = set(oidc_namespaces)
        only = next(iter(sole)) if len(sole) == 1 else None
        accepted: dict[str, frozenset[str]] = {}
        for e in entries:
            if namespace_of(e) is not None:
                accepted[e] = frozenset({e})
            else:
                accepted[e] = frozenset({e} | ({qualify(only, e)} if only else set()))
        return cls(tuple(accepted), accepted)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def matched(self, groups: frozenset[str]) -> tuple[str, ...]:
        """The entries ``groups`` satisfy, in the configured order."""
        return tuple(e for e in self.entries if self.accepted[e] & groups)

    def any(self, groups: frozenset[str]) -> bool:
        return any(self.accepted[e] & groups for e in self.entries)


def ambiguous_bare(entries: Iterable[str], oidc_namespaces: Iterable[str]) -> list[str]:
    """Bare group entries that match no OIDC group because several namespaces exist."""
    if len(set(oidc_namespaces)) < 2:
        return []
    return [e for e in entries if namespace_of(e) is None]


@dataclass(frozen=True, slots=True)
class LegacyOwners:
    """How the one-time migration names an owner written before namespaces existed.

    The old name says nothing of its kind, so: ``admin`` (the bootstrap token's owner)
    becomes :data:`BOOTSTRAP_ADMIN`; a name in the basic users file becomes ``basic:<name>``;
    any other the ``default`` namespace's (None: refuse, there is no safe guess).
    """

    default: str | None
    basic_names: frozenset[str] = frozenset()

    def full(self, old: str) -> str:
        if old == "admin":
            return BOOTSTRAP_ADMIN
        if old in self.basic_names:
            return qualify(BASIC, old)
        if self.default is None:
            raise ValueError(
                f"existing owner {old!r} cannot be given a namespace: several OIDC "
                "namespaces are configured; set JOBGATE_LEGACY_OWNER_NAMESPACE"
            )
        return qualify(self.default, old)

    @classmethod
    def choose(
        cls,
        *,
        setting: str | None,
        oidc_namespaces: Iterable[str],
        basic_on: bool,
        basic_names: frozenset[str] = frozenset(),
    ) -> LegacyOwners:
        """The rule for a site's settings: the setting if given; else the sole OIDC
        namespace; else ``basic`` with basic users and no OIDC; else ``token``."""
        spaces = sorted(set(oidc_namespaces))
        default: str | None
        if setting:
            default = setting
        elif len(spaces) == 1:
            default = spaces[0]
        elif len(spaces) > 1:
            default = None
        else:
            default = BASIC if basic_on else TOKEN
        return cls(default, basic_names)
