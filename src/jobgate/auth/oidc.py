"""OIDC bearer tokens: JWTs checked against their issuer's keys, found by OIDC discovery.

Checked: the issuer is one of ``JOBGATE_OIDC_ISSUERS``; the algorithm is in the allow list
(never ``none`` nor HS*); the signature, with the key named by ``kid`` in the issuer's JWKS;
``exp``/``nbf`` (with leeway); ``aud`` contains ``JOBGATE_OIDC_AUDIENCE``. Keys are cached;
a ``kid`` not in the cache refetches the JWKS (an issuer rotating its keys), at most once
per ``JOBGATE_OIDC_JWKS_MIN_REFRESH`` seconds per issuer so bad tokens cannot make the
service hammer the issuer; keys older than ``JOBGATE_OIDC_JWKS_MAX_AGE`` are refetched
before use, so a key the issuer withdrew stops working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from jobgate.auth.identity import Caller, Scope, expand, plain_group
from jobgate.auth.namespaces import GroupRule, issuer_namespaces, qualify

log = logging.getLogger(__name__)
FETCH_TIMEOUT = 10.0


class OidcError(Exception):
    """The token is not acceptable; the message is safe to show the caller."""


def _norm(url: str) -> str:
    return url.rstrip("/")


@dataclass
class _Issuer:
    url: str
    namespace: str
    keys: dict[str | None, Any] = field(default_factory=dict)
    fetched_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by its exact name (``wlcg.groups``), else by a dotted path (``realm.roles``)."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def groups_of(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list):
        return frozenset()
    return frozenset(plain_group(g) for g in value if isinstance(g, str) and g.strip("/ "))


class OidcVerifier:
    """Turns an OIDC access token (a JWT) into a :class:`Caller`, or raises :class:`OidcError`.

    ``issuers`` are ``JOBGATE_OIDC_ISSUERS`` entries (``url`` or ``alias=url``); the caller
    is ``<namespace>:<user claim>`` and their groups ``<namespace>:<group>``.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        issuers: Sequence[str],
        audience: str,
        user_claim: str = "sub",
        groups_claim: str = "groups",
        algorithms: Sequence[str] = ("RS256",),
        admin_groups: GroupRule | None = None,
        min_refresh: float = 30.0,
        max_age: float = 3600.0,
        leeway: float = 30.0,
    ) -> None:
        self.http = http
        spaces = issuer_namespaces(issuers)
        self.issuers = {url: _Issuer(url, ns) for url, ns in spaces.items()}
        self.audience = audience
        self.user_claim = user_claim
        self.groups_claim = groups_claim
        self.algorithms = frozenset(algorithms)
        self.admin_groups = admin_groups or GroupRule.of((), ())
        self.min_refresh = min_refresh
        self.max_age = max_age
        self.leeway = leeway

    async def authenticate(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OidcError("the bearer token is not a valid JWT") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise OidcError(f"token algorithm {alg!r} is not accepted")
        iss = unverified.get("iss")
        issuer = self.issuers.get(_norm(iss)) if isinstance(iss, str) else None
        if issuer is None:
            raise OidcError("the token's issuer is not trusted here")
        kid = header.get("kid")
        key = await self._key(issuer, kid if isinstance(kid, str) else None)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=iss,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise OidcError("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise OidcError("the token is not meant for this service (audience)") from exc
        except jwt.ImmatureSignatureError as exc:
            raise OidcError("the token is not valid yet") from exc
        except jwt.PyJWTError as exc:
            raise OidcError(f"the token is invalid: {type(exc).__name__}") from exc
        user = claim(claims, self.user_claim)
        if not isinstance(user, str) or not user:
            raise OidcError(f"the token has no {self.user_claim!r} claim")
        ns = issuer.namespace
        groups = frozenset(qualify(ns, g) for g in groups_of(claim(claims, self.groups_claim)))
        scopes = {Scope.SUBMIT}
        if self.admin_groups.any(groups):
            scopes.add(Scope.ADMIN)
        return Caller(qualify(ns, user), "oidc", expand(scopes), groups, credential=token)

    async def _key(self, issuer: _Issuer, kid: str | None) -> Any:
        found = self._pick(issuer, kid) if not self._stale(issuer) else None
        if found is not None:
            return found
        async with issuer.lock:
            stale = self._stale(issuer)
            found = None if stale else self._pick(issuer, kid)  # refreshed while we waited
            if found is None and (stale or self._may_refresh(issuer)):
                await self._refresh(issuer)
                found = self._pick(issuer, kid)
        if found is None:
            raise OidcError("the token was signed with a key the issuer does not publish")
        return found

    @staticmethod
    def _pick(issuer: _Issuer, kid: str | None) -> Any:
        if kid is not None:
            return issuer.keys.get(kid)
        # No kid: acceptable only when the issuer publishes exactly one key.
        return next(iter(issuer.keys.values())) if len(issuer.keys) == 1 else None

    def _stale(self, issuer: _Issuer) -> bool:
        """Keys older than ``max_age``: refetched, so a key the issuer withdrew stops working."""
        return issuer.fetched_at is not None and (
            time.monotonic() - issuer.fetched_at >= self.max_age
        )

    def _may_refresh(self, issuer: _Issuer) -> bool:
        return issuer.fetched_at is None or (
            time.monotonic() - issuer.fetched_at >= self.min_refresh
        )

    async def _refresh(self, issuer: _Issuer) -> None:
        issuer.fetched_at = time.monotonic()
        try:
            discovery = await self._get_json(issuer.url + "/.well-known/openid-configuration")
            if _norm(str(discovery.get("issuer", ""))) != issuer.url:
                raise OidcError("the issuer's discovery document names another issuer")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise OidcError("the issuer's discovery document has no jwks_uri")
            jwks = await self._get_json(jwks_uri)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch the keys of OIDC issuer %s: %s", issuer.url, exc)
            raise OidcError("the token's issuer cannot be reached to check it") from exc
        keys: dict[str | None, Any] = {}
        for jwk in jwks.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[jwk.get("kid")] = jwt.PyJWK(jwk).key
            except jwt.PyJWTError:
                continue  # a key type or curve this service does not use
        issuer.keys = keys
        log.info("OIDC issuer %s: %d signing keys", issuer.url, len(keys))

    async def _get_json(self, url: str) -> dict[str, Any]:
        resp = await self.http.get(url, timeout=FETCH_TIMEOUT)
        resp.raise_for_status()
        data = resp.json()
        if not isinstance(data, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return data
