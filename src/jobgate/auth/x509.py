"""Client certificates (mutual TLS): a verified chain → :class:`Caller`.

The TLS layer (OpenSSL, through :mod:`ssl`) has already checked at the handshake that the
chain leads to a trusted CA with valid signatures, RFC 3820 proxy certificates allowed
(``VERIFY_ALLOW_PROXY_CERTS``), but not the validity dates: those are checked here, per
request, so that a connection kept alive past a proxy's end stops working, and an expired
certificate gets a 401 that says which certificate expired when (instead of a TLS alert).

Here, on the chain as verified (leaf first, trust anchor last):

- every certificate is within its validity period;
- each proxy certificate (with the ProxyCertInfo extension) is signed by the next
  certificate, its subject is that certificate's subject plus one ``CN``, it is not a CA,
  its path length constraint holds, and its policy lets it act for its issuer (an
  ``independent`` proxy does not);
- the first certificate that is not a proxy is the user's (end-entity, not a CA); its
  subject, in the OpenSSL one-line form grid tools print (``/DC=org/DC=example/CN=Alice``),
  is the caller: owner ``x509:<subject>``;
- with certificate revocation lists configured, neither the user's certificate nor a CA
  above it is revoked by a CRL its issuer signed.

Legacy (pre-RFC, "Globus") proxies carry no ProxyCertInfo and are signed by a non-CA
certificate, which OpenSSL refuses at the handshake; ``grid-proxy-init -rfc`` and
``voms-proxy-init`` make RFC 3820 proxies.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from jobgate.auth.identity import Caller, Scope, expand, plain_group
from jobgate.auth.namespaces import X509, GroupRule, qualify, token_owner

PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
"""id-pe-proxyCertInfo (RFC 3820)."""
INHERIT_ALL = "1.3.6.1.5.5.7.21.1"
INDEPENDENT = "1.3.6.1.5.5.7.21.2"
LIMITED = "1.3.6.1.4.1.3536.1.1.1.9"
"""Globus' limited proxy: may not start jobs at sites that honour it; here, the user."""
CACHE_SIZE = 1024

_SHORT_NAMES = {
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.USER_ID: "UID",
}


class CertificateRejected(ValueError):
    """The client certificate chain does not identify a caller (the message says why)."""


def oneline(name: x509.Name) -> str:
    """``/C=UK/O=Grid/CN=Alice``: OpenSSL's one-line form, in the certificate's order."""
    parts = []
    for rdn in name.rdns:
        values = [f"{_SHORT_NAMES.get(a.oid, a.rfc4514_attribute_name)}={a.value!s}" for a in rdn]
        parts.append("+".join(values))
    return "".join("/" + p for p in parts)


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated")
    return tag, pos, pos + length


def _oid(body: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise ValueError("empty OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


@dataclass(frozen=True, slots=True)
class ProxyCertInfo:
    path_length: int | None
    language: str


def parse_proxy_cert_info(der: bytes) -> ProxyCertInfo:
    """ProxyCertInfo ::= SEQUENCE { pCPathLenConstraint INTEGER OPTIONAL,
    proxyPolicy SEQUENCE { policyLanguage OID, policy OCTET STRING OPTIONAL } }"""
    tag, pos, end = _der(der, 0)
    if tag != 0x30:
        raise ValueError("not a SEQUENCE")
    path_length = None
    tag, start, stop = _der(der, pos)
    if tag == 0x02:
        path_length = int.from_bytes(der[start:stop], "big", signed=True)
        tag, start, stop = _der(der, stop)
    if tag != 0x30 or stop > end:
        raise ValueError("no proxyPolicy")
    tag, o_start, o_stop = _der(der, start)
    if tag != 0x06:
        raise ValueError("no policyLanguage")
    return ProxyCertInfo(path_length, _oid(der[o_start:o_stop]))


def proxy_info(cert: x509.Certificate) -> ProxyCertInfo | None:
    """The certificate's ProxyCertInfo; None for a certificate that is not a proxy."""
    try:
        ext = cert.extensions.get_extension_for_oid(PROXY_CERT_INFO)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    try:
        return parse_proxy_cert_info(raw)
    except (ValueError, IndexError):
        raise CertificateRejected("the proxy certificate's ProxyCertInfo is malformed") from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_proxy(proxy: x509.Certificate, issuer: x509.Certificate, info: ProxyCertInfo) -> None:
    try:
        proxy.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRejected(
            f"the proxy certificate {oneline(proxy.subject)} is not signed by "
            f"{oneline(issuer.subject)}"
        ) from None
    rdns = proxy.subject.rdns
    last = rdns[-1] if rdns else None
    if (
        last is None
        or len(last) != 1
        or next(iter(last)).oid != NameOID.COMMON_NAME
        or x509.Name(rdns[:-1]) != issuer.subject
    ):
        raise CertificateRejected(
            f"the proxy certificate's subject {oneline(proxy.subject)} is not its issuer's "
            f"subject {oneline(issuer.subject)} plus one CN"
        )
    if _is_ca(proxy) or _is_ca(issuer):
        raise CertificateRejected("a proxy certificate must not be, or be issued by, a CA")
    if info.language == INDEPENDENT:
        raise CertificateRejected(
            "an independent proxy certificate does not act for its issuer; use an "
            "inheritAll (or limited) proxy"
        )


def _check_dates(chain: Sequence[x509.Certificate], now: datetime) -> None:
    for cert in chain:
        kind = "proxy certificate" if proxy_info(cert) is not None else "certificate"
        if now < cert.not_valid_before_utc:
            raise CertificateRejected(
                f"the {kind} {oneline(cert.subject)} is not valid before "
                f"{cert.not_valid_before_utc.isoformat()}"
            )
        if now > cert.not_valid_after_utc:
            raise CertificateRejected(
                f"the {kind} {oneline(cert.subject)} expired at "
                f"{cert.not_valid_after_utc.isoformat()}"
            )


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """Who a chain identifies: the user's subject, and how many proxies stood for them."""

    subject: str
    proxies: int
    expires: datetime
    valid_from: datetime
    """The latest start of validity in the chain: before it, the chain is not valid."""
    valid_until: datetime
    """The earliest end of validity in the chain (CA certificates included)."""


class Revocations:
    """Certificate revocation lists from a file (PEM, several at once, or DER) or a
    directory of them (``/etc/grid-security/certificates``: its ``<hash>.r0`` files; files
    that hold no CRL are skipped). Read again, when changed, at most every ``recheck``
    seconds. A CRL whose signature is not its issuer's is ignored."""

    _DER_NAME = re.compile(r"\.(r\d+|crl|der)$")

    def __init__(self, path: Path, recheck: float = 60.0) -> None:
        self.path = path
        self.recheck = recheck
        self._by_issuer: dict[x509.Name, list[x509.CertificateRevocationList]] = {}
        self._stamp: object = None
        self._checked = 0.0
        self.load()

    def _files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if p.is_file())
        return [self.path]

    def load(self) -> None:
        """Read the CRLs if they changed; raises OSError when the path cannot be read."""
        files = self._files()
        stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        self._checked = time.monotonic()
        if stamp == self._stamp:
            return
        found: dict[x509.Name, list[x509.CertificateRevocationList]] = {}
        for path in files:
            for crl in self._parse(path):
                found.setdefault(crl.issuer, []).append(crl)
        self._by_issuer, self._stamp = found, stamp

    def _parse(self, path: Path) -> list[x509.CertificateRevocationList]:
        data = path.read_bytes()
        out = []
        with contextlib.suppress(ValueError):
            if b"-----BEGIN X509 CRL-----" in data:
                for block in data.split(b"-----BEGIN X509 CRL-----")[1:]:
                    pem = b"-----BEGIN X509 CRL-----" + block.split(b"-----END X509 CRL-----")[0]
                    out.append(x509.load_pem_x509_crl(pem + b"-----END X509 CRL-----\n"))
            elif self._DER_NAME.search(path.name):
                out.append(x509.load_der_x509_crl(data))
        return out

    def current(self) -> object:
        """The lists' version, after reading them again if due and changed."""
        if time.monotonic() - self._checked >= self.recheck:
            with contextlib.suppress(OSError):  # keep the lists last read
                self.load()
        return self._stamp

    def revoked(self, cert: x509.Certificate, issuer: x509.Certificate) -> datetime | None:
        """When ``cert`` was revoked by a CRL of ``issuer``; None if it is not."""
        self.current()
        for crl in self._by_issuer.get(cert.issuer, ()):
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                return entry.revocation_date_utc
        return None


def identify(
    chain: Sequence[x509.Certificate],
    now: datetime | None = None,
    revocations: Revocations | None = None,
) -> CertIdentity:
    """The user a verified chain (leaf first) stands for; raises CertificateRejected."""
    if not chain:
        raise CertificateRejected("no client certificate was presented")
    now = now or datetime.now(UTC)
    _check_dates(chain, now)
    depth = 0
    while (info := proxy_info(chain[depth])) is not None:
        if depth + 1 >= len(chain):
            raise CertificateRejected("the proxy certificate's issuer is not in the chain")
        _check_proxy(chain[depth], chain[depth + 1], info)
        # A proxy's path length bounds the proxies below it (those nearer the leaf).
        if info.path_length is not None and depth > info.path_length:
            raise CertificateRejected(
                f"the proxy certificate {oneline(chain[depth].subject)} allows "
                f"{info.path_length} proxies below it, the chain has {depth}"
            )
        depth += 1
    user = chain[depth]
    if _is_ca(user):
        raise CertificateRejected("a CA certificate does not identify a user")
    if revocations is not None:
        for cert, issuer in zip(chain[depth:], chain[depth + 1 :], strict=False):
            when = revocations.revoked(cert, issuer)
            if when is not None:
                raise CertificateRejected(
                    f"the certificate {oneline(cert.subject)} was revoked at {when.isoformat()}"
                )
    expires = min(c.not_valid_after_utc for c in chain[: depth + 1])
    return CertIdentity(
        oneline(user.subject),
        depth,
        expires,
        max(c.not_valid_before_utc for c in chain),
        min(c.not_valid_after_utc for c in chain),
    )


@dataclass(frozen=True, slots=True)
class MappedUser:
    owner: str
    groups: frozenset[str]


class MapFileError(ValueError):
    """A line of the subjects file is not ``"<subject>" <owner> [group,group]``."""


def parse_map(
    text: str, known: Iterable[str], source: str = "subjects file"
) -> dict[str, MappedUser]:
    """grid-mapfile lines, ``"<subject>" <owner> [group,group]``: subject → owner and
    groups. A bare owner is ``x509:<owner>``; a full one (``iam:alice``) is taken as written,
    its namespace one of ``known`` (the administrator's choice, as for service tokens)."""
    out: dict[str, MappedUser] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as exc:
            raise MapFileError(f"{source} line {n}: {exc}") from None
        if len(fields) not in (2, 3) or not fields[0].startswith("/"):
            raise MapFileError(f'{source} line {n}: expected "/subject" owner [group,group]')
        subject, owner = fields[0], fields[1]
        try:
            full = qualify(X509, owner) if ":" not in owner else token_owner(owner, known)
        except ValueError as exc:
            raise MapFileError(f"{source} line {n}: {exc}") from None
        groups = frozenset(
            plain_group(g) for g in (fields[2] if len(fields) == 3 else "").split(",")
        )
        out[subject] = MappedUser(full, groups - {""})
    return out


class SubjectMap:
    """The subjects file, read again when it changes (like the basic users file)."""

    def __init__(self, path: Path, known: Iterable[str] = ()) -> None:
        self.path = path
        self.known = tuple(known)
        self._map: dict[str, MappedUser] = {}
        self._stamp: tuple[int, int] | None = None
        self.load()

    def load(self) -> None:
        """(Re)read the file if it changed since the last read; raises if it is invalid."""
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._map = parse_map(self.path.read_text(), self.known, str(self.path))
            self._stamp = stamp

    def get(self, subject: str) -> MappedUser | None:
        # On a failed read keep the map last read (the file is being rewritten).
        with contextlib.suppress(OSError, MapFileError):
            self.load()
        return self._map.get(subject)


class ClientCertificates:
    """Authenticates callers by their verified client certificate chain (PEM, leaf first,
    as the ASGI TLS extension's ``client_cert_chain``).

    The caller is ``x509:<subject>``, or who the subjects file maps the subject to, with
    the file's groups; scope ``submit``, and ``admin`` when the subject is one of
    ``admin_dns`` or a group is one of the admin groups. Parsed chains are cached (a
    connection presents the same chain with every request), and so is what they identify:
    a later request reuses the checks (signatures, proxy rules, revocation under the same
    revocation lists) while the time is within every certificate's validity, and checks
    again otherwise, so an expired certificate is refused with its reason.
    """

    def __init__(
        self,
        admin_dns: Iterable[str] = (),
        *,
        subjects: SubjectMap | None = None,
        admin_groups: GroupRule | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self.admin_dns = frozenset(admin_dns)
        self.revocations = revocations
        self.subjects = subjects
        self.admin_groups = admin_groups
        self._parsed: dict[tuple[str, ...], list[x509.Certificate]] = {}
        self._known: dict[tuple[str, ...], tuple[CertIdentity, object]] = {}

    def _identify(self, pems: Sequence[str], now: datetime | None) -> CertIdentity:
        key = tuple(pems)
        now = now or datetime.now(UTC)
        stamp = self.revocations.current() if self.revocations is not None else None
        known = self._known.get(key)
        if known is not None:
            ident, checked_with = known
            if ident.valid_from <= now <= ident.valid_until and checked_with == stamp:
                return ident
        ident = identify(self._chain(pems), now, self.revocations)
        if len(self._known) >= CACHE_SIZE:
            self._known.clear()
        self._known[key] = (ident, stamp)
        return ident

    def _chain(self, pems: Sequence[str]) -> list[x509.Certificate]:
        key = tuple(pems)
        chain = self._parsed.get(key)
        if chain is None:
            try:
                chain = [x509.load_pem_x509_certificate(p.encode()) for p in key]
            except ValueError:
                raise CertificateRejected("the client certificate cannot be read") from None
            if len(self._parsed) >= CACHE_SIZE:
                self._parsed.clear()
            self._parsed[key] = chain
        return chain

    def authenticate(self, pems: Sequence[str], now: datetime | None = None) -> Caller:
        ident = self._identify(pems, now)
        mapped = self.subjects.get(ident.subject) if self.subjects is not None else None
        owner = mapped.owner if mapped else qualify(X509, ident.subject)
        groups = mapped.groups if mapped else frozenset()
        scopes = {Scope.SUBMIT}
        if ident.subject in self.admin_dns or (
            self.admin_groups is not None and self.admin_groups.any(groups)
        ):
            scopes.add(Scope.ADMIN)
        return Caller(owner, "x509", expand(scopes), groups)
