"""The configured ways of authenticating, together: ``Authorization`` header → :class:`Caller`."""

from __future__ import annotations

import base64
import binascii

from jobgate.auth.basic import BasicUsers
from jobgate.auth.identity import ANONYMOUS_ADMIN, Caller
from jobgate.auth.oidc import OidcError, OidcVerifier
from jobgate.auth.tokens import ServiceTokens, looks_like_service_token
from jobgate.errors import Unauthorized

REALM = "jobgate"


class Authenticator:
    """Checks one request's credentials against the modes of ``JOBGATE_AUTH``.

    A credential of an enabled kind is always checked (a bad one is a 401 even with ``none``
    on); a request without one is the anonymous admin with ``none`` on, else a 401.
    """

    def __init__(
        self,
        modes: tuple[str, ...],
        *,
        oidc: OidcVerifier | None = None,
        tokens: ServiceTokens | None = None,
        basic: BasicUsers | None = None,
    ) -> None:
        self.modes = frozenset(modes)
        self.oidc = oidc
        self.tokens = tokens
        self.basic = basic
        challenges = []
        if oidc is not None or tokens is not None:
            challenges.append(f'Bearer realm="{REALM}"')
        if basic is not None:
            challenges.append(f'Basic realm="{REALM}"')
        self.challenge = ", ".join(challenges)

    @property
    def open(self) -> bool:
        """True when requests without credentials are let in (``none``)."""
        return "none" in self.modes

    def _fail(self, message: str) -> Unauthorized:
        headers = {"WWW-Authenticate": self.challenge} if self.challenge else None
        return Unauthorized(
            message, errors=[{"where": "header.Authorization", "what": message}], headers=headers
        )

    async def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, value = (authorization or "").strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value and (self.tokens is not None or self.oidc is not None):
            return await self._bearer(value)
        if scheme == "basic" and value and self.basic is not None:
            return await self._basic(value)
        if self.open:
            return ANONYMOUS_ADMIN
        if not authorization:
            raise self._fail("authentication required")
        raise self._fail(f"the {scheme or 'given'} authorization scheme is not accepted here")

    async def _bearer(self, token: str) -> Caller:
        if looks_like_service_token(token):
            if self.tokens is None:
                raise self._fail("service tokens are not accepted here")
            caller = await self.tokens.authenticate(token)
            if caller is None:
                raise self._fail("the token is unknown, expired or revoked")
            return caller
        if self.oidc is None:
            raise self._fail("the token is unknown, expired or revoked")
        try:
            return await self.oidc.authenticate(token)
        except OidcError as exc:
            raise self._fail(str(exc)) from None

    async def _basic(self, value: str) -> Caller:
        assert self.basic is not None
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise self._fail("malformed basic credentials")
        caller = await self.basic.authenticate(name, password)
        if caller is None:
            raise self._fail("wrong user name or password")
        return caller
