"""The SSRF guard: a user may not make the gateway reach addresses users cannot reach.

A host is resolved here, every address it resolves to is checked, and the connection is
then made to one of those checked addresses (never resolved again by someone else), so
a name that answers differently on a second lookup (DNS rebinding) gains nothing.
Staging and webhook delivery share it, each with its own allow-list
(``JOBGATE_STAGING_ALLOWED_HOSTS``, ``JOBGATE_WEBHOOK_ALLOWED_HOSTS``: ``host`` or
``host:port``; IPv6 as ``[::1]:9000``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: link-local or ULA anyway, named so the refusal says why.
METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """A host the guard will not connect to; the message says which address and why."""


def _tunnelled(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses a 6to4 or Teredo address hands its traffic to."""
    if ip.sixtofour is not None:
        return [("6to4", ip.sixtofour)]
    if ip.teredo is not None:
        # Both ends: the relay reaches the server, and the client (its address obfuscated).
        server, client = ip.teredo
        return [("Teredo", client), ("Teredo", server)]
    return []


def forbidden(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be reached (``None`` if it may): anything but a global unicast
    address is refused. IPv4-mapped and NAT64 addresses are judged by the IPv4 address
    inside; 6to4 and Teredo addresses are refused when the IPv4 address inside is, since
    a relay would deliver the traffic there."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return forbidden(ip.ipv4_mapped)
        if ip in _NAT64:
            return forbidden(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for form, inner in _tunnelled(ip):
            reason = forbidden(inner)
            if reason is not None:
                return f"{form} form of a {reason}"
    if ip in METADATA:
        return "cloud metadata"
    for reason, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if hit:
            return reason
    if not ip.is_global:
        return "non-global"
    return None


def literal(host: str) -> IPAddress | None:
    """The address ``host`` spells without DNS, in any form a resolver accepts: dotted,
    shortened (``127.1``), one number (``2130706433``), hex or octal parts, ``[v6]``."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if not bare or not all(c in "0123456789abcdefxABCDEFX." for c in bare):
        return None  # a name (inet_aton would also take trailing text after a space)
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _a(reason: str) -> str:
    return ("an " if reason[0] in "aeiou" else "a ") + reason


def _loopback_name(host: str) -> bool:
    # RFC 6761: "localhost" and names under it always mean the loopback interface.
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def _parse_entry(entry: str) -> tuple[str, int | None]:
    entry = entry.strip().lower()
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, None  # a name, an IPv4 address or a bare IPv6 address


def parse_allowed(entries: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """``host`` / ``host:port`` / ``[v6]:port`` strings as (host, port or None) pairs."""
    return frozenset(_parse_entry(e) for e in entries if e.strip())


@dataclass(frozen=True)
class Guard:
    """Checks hosts against the rule and the operator's allow-list, ``setting``."""

    allowed: frozenset[tuple[str, int | None]] = frozenset()
    setting: str = "JOBGATE_STAGING_ALLOWED_HOSTS"
    """Where the allow-list comes from: refusals tell the operator."""

    @classmethod
    def from_entries(
        cls, entries: Iterable[str], setting: str = "JOBGATE_STAGING_ALLOWED_HOSTS"
    ) -> Guard:
        return cls(parse_allowed(entries), setting)

    def is_allowed(self, host: str, port: int) -> bool:
        host = host.strip("[]").lower()
        return (host, None) in self.allowed or (host, port) in self.allowed

    def precheck(self, host: str, port: int) -> str | None:
        """Why ``host:port`` is refused as far as is known without DNS (``None``: it may
        pass). Addresses and loopback names are judged here; other names only when they
        are resolved, by :meth:`resolve`."""
        if self.is_allowed(host, port):
            return None
        ip = literal(host)
        if ip is None:
            return self._named(host)
        reason = forbidden(ip)
        if reason is None:
            return None
        return f"{host} is {_a(reason)} address (the operator may allow it with {self.setting})"

    def _named(self, host: str) -> str | None:
        if not _loopback_name(host):
            return None
        return f"{host} is a loopback name (the operator may allow it with {self.setting})"

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host:port``, every one of them checked.

        Raises :class:`Refused` if any address is forbidden (one bad answer among good
        ones is still a way in), ``socket.gaierror`` if the name does not resolve.
        """
        bare = host.strip("[]")
        infos = await asyncio.get_running_loop().getaddrinfo(bare, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if self.is_allowed(bare, port):
            return addresses
        for addr in addresses:
            reason = forbidden(ipaddress.ip_address(addr.split("%", 1)[0]))
            if reason is not None:
                what = bare if bare == addr else f"{bare} resolves to {addr}, which"
                raise Refused(
                    f"{what} is {_a(reason)} address: refused "
                    f"(the operator may allow it with {self.setting})"
                )
        return addresses


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request to an address the guard checked.

    The URL's host is swapped for the checked address; the ``Host`` header and the TLS
    server name (``sni_hostname``, also used to verify the certificate) keep the name.
    Every request passes here, so every redirect hop is checked too.
    """

    def __init__(self, guard: Guard, inner: httpx.AsyncBaseTransport) -> None:
        self.guard = guard
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        if self.guard.is_allowed(url.host, port):
            return await self.inner.handle_async_request(request)
        try:
            addresses = await self.guard.resolve(url.host, port)
        except socket.gaierror as exc:
            raise httpx.ConnectError(f"cannot resolve {url.host}: {exc}", request=request) from exc
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions.setdefault("sni_hostname", url.host)
        last: httpx.ConnectError | None = None
        for addr in addresses:
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=addr.split("%", 1)[0]),
                headers=request.headers,  # carries Host: the original name
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self.inner.handle_async_request(pinned)
            except httpx.ConnectError as exc:
                last = exc  # try the next checked address, as a resolver-driven client would
        assert last is not None
        raise last

    async def aclose(self) -> None:
        await self.inner.aclose()
