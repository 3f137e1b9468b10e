"""Certificates the transport tests make: a CA, a server certificate, users, and RFC 3820
proxy certificates (good, expired, of an untrusted user, signed with the wrong key)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobgate.auth.x509 import INDEPENDENT, INHERIT_ALL, PROXY_CERT_INFO

Key = ec.EllipticCurvePrivateKey


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def with_cn(subject: x509.Name, cn: str) -> x509.Name:
    """``subject`` plus one ``CN`` (a proxy's subject)."""
    return x509.Name([*subject.rdns, *name((NameOID.COMMON_NAME, cn)).rdns])


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def proxy_cert_info(language: str = INHERIT_ALL, path_length: int | None = None) -> bytes:
    policy = _tlv(0x30, _tlv(0x06, _oid(language)))
    length = b"" if path_length is None else _tlv(0x02, bytes([path_length]))
    return _tlv(0x30, length + policy)


@dataclass
class Issued:
    cert: x509.Certificate
    key: Key

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    subject: x509.Name,
    issuer: Issued | None,
    *,
    ca: bool = False,
    days: float = 30,
    not_before: datetime | None = None,
    key: Key | None = None,
    sign_with: Key | None = None,
    ip: str | None = None,
    proxy: bytes | None = None,
) -> Issued:
    """A certificate for ``subject`` signed by ``issuer`` (None: self-signed)."""
    key = key or new_key()
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
    )
    if proxy is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    else:
        builder = builder.add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO, proxy), True)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName("localhost")]
            ),
            False,
        )
    signer = sign_with or (issuer.key if issuer else key)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def proxy_of(
    user: Issued,
    *,
    cn: str = "1234567",
    days: float = 1,
    not_before: datetime | None = None,
    sign_with: Key | None = None,
    language: str = INHERIT_ALL,
    subject: x509.Name | None = None,
) -> Issued:
    """An RFC 3820 proxy of ``user``: subject = the user's + CN, signed by the user's key."""
    rdns = [
        *user.subject.rdns,
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
    ]
    return issue(
        subject or x509.Name(rdns),
        user,
        days=days,
        not_before=not_before,
        sign_with=sign_with,
        proxy=proxy_cert_info(language),
    )


def crl_der(issuer: Issued, *revoked: Issued, sign_with: Key | None = None) -> bytes:
    """A CRL of ``issuer`` (DER) revoking ``revoked``."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=7))
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.cert.serial_number)
            .revocation_date(now - timedelta(minutes=30))
            .build()
        )
    crl = builder.sign(sign_with or issuer.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def crl_pem(issuer: Issued, *revoked: Issued) -> bytes:
    der = crl_der(issuer, *revoked)
    return x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)


USER_DN = "/C=UK/O=jobgate tests/OU=Users/CN=Alice Grid"
ADMIN_DN = "/C=UK/O=jobgate tests/OU=Users/CN=Ada Admin"


@dataclass
class Pki:
    """Every certificate the tests use, written as PEM files under ``dir``."""

    dir: Path
    ca: Issued
    server: Issued
    user: Issued
    admin: Issued
    other_ca: Issued
    stranger: Issued

    def path(self, filename: str) -> Path:
        return self.dir / filename

    def write(self, filename: str, *parts: bytes) -> Path:
        path = self.dir / filename
        path.write_bytes(b"".join(parts))
        path.chmod(0o600)
        return path

    def client_file(self, filename: str, leaf: Issued, *chain: Issued) -> Path:
        """One file holding ``leaf``'s certificate, its key and the chain above it, as
        grid proxy files do."""
        return self.write(filename, leaf.pem(), leaf.key_pem(), *(c.pem() for c in chain))


def make_pki(directory: Path) -> Pki:
    o = (NameOID.ORGANIZATION_NAME, "jobgate tests")
    ca = issue(
        name((NameOID.COUNTRY_NAME, "UK"), o, (NameOID.COMMON_NAME, "Test CA")),
        None,
        ca=True,
        days=365,
    )
    server = issue(name((NameOID.COMMON_NAME, "127.0.0.1")), ca, ip="127.0.0.1")
    users = (NameOID.ORGANIZATIONAL_UNIT_NAME, "Users")
    user = issue(
        name((NameOID.COUNTRY_NAME, "UK"), o, users, (NameOID.COMMON_NAME, "Alice Grid")), ca
    )
    admin = issue(
        name((NameOID.COUNTRY_NAME, "UK"), o, users, (NameOID.COMMON_NAME, "Ada Admin")), ca
    )
    other_ca = issue(name((NameOID.COMMON_NAME, "Untrusted CA")), None, ca=True, days=365)
    # The same subject as the trusted user, from a CA the server does not trust.
    stranger = issue(user.subject, other_ca)
    pki = Pki(directory, ca, server, user, admin, other_ca, stranger)
    pki.write("ca.pem", ca.pem())
    pki.write("server.pem", server.pem())
    pki.write("server.key", server.key_pem())
    pki.write("user.pem", user.pem())
    pki.write("user.key", user.key_pem())
    pki.write("admin.pem", admin.pem())
    pki.write("admin.key", admin.key_pem())
    return pki


__all__ = ["INDEPENDENT", "Issued", "Pki", "issue", "make_pki", "proxy_of"]
