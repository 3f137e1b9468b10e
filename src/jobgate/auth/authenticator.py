"""The configured ways of authenticating, together: ``Authorization`` header, client
certificate chain or UNIX socket peer → :class:`Caller`."""

from __future__ import annotations

import base64
import binascii

from jobgate.auth.basic import BasicUsers
from jobgate.auth.identity import ANONYMOUS_ADMIN, Caller
from jobgate.auth.oidc import OidcError, OidcVerifier
from jobgate.auth.tokens import ServiceTokens, looks_like_service_token
from jobgate.auth.unixsocket import SocketOwner
from jobgate.auth.x509 import CertificateRejected, ClientCertificates
from jobgate.errors import Unauthorized

REALM = "jobgate"


class Authenticator:
    """Checks one request's credentials against the modes of ``JOBGATE_AUTH``.

    A credential of an enabled kind is always checked (a bad one is a 401 even with ``none``
    on); a request without one is the anonymous admin with ``none`` on, else a 401. An
    ``Authorization`` header wins over a client certificate (a script may act with a token
    over a connection that presents one).
    """

    def __init__(
        self,
        modes: tuple[str, ...],
        *,
        oidc: OidcVerifier | None = None,
        tokens: ServiceTokens | None = None,
        basic: BasicUsers | None = None,
        certificates: ClientCertificates | None = None,
        socket_owner: SocketOwner | None = None,
    ) -> None:
        self.modes = frozenset(modes)
        self.certificates = certificates
        self.socket_owner = socket_owner
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

    def _fail(self, message: str, where: str = "header.Authorization") -> Unauthorized:
        headers = {"WWW-Authenticate": self.challenge} if self.challenge else None
        return Unauthorized(message, errors=[{"where": where, "what": message}], headers=headers)

    def _certificate(self, chain: list[str]) -> Caller:
        assert self.certificates is not None
        try:
            return self.certificates.authenticate(chain)
        except CertificateRejected as exc:
            raise self._fail(str(exc), where="tls.client_certificate") from None

    def socket_caller(self, peer_uid: int | None) -> Caller:
        """The caller of a request through the UNIX socket (401 for another user's)."""
        caller = self.socket_owner.authenticate(peer_uid) if self.socket_owner else None
        if caller is None:
            raise self._fail(f"uid {peer_uid} does not own this socket", where="socket.peer")
        return caller

    async def authenticate(
        self, authorization: str | None, *, client_chain: list[str] | None = None
    ) -> Caller:
        scheme, _, value = (authorization or "").strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value and (self.tokens is not None or self.oidc is not None):
            return await self._bearer(value)
        if scheme == "basic" and value and self.basic is not None:
            return await self._basic(value)
        if not authorization and client_chain and self.certificates is not None:
            return self._certificate(client_chain)
        if self.open:
            return ANONYMOUS_ADMIN
        if not authorization:
            if self.certificates is not None:
                raise self._fail(
                    "authentication required (a client certificate or credentials)",
                    where="tls.client_certificate",
                )
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
