"""Client certificate chains → callers, without a server: the rules for users and RFC 3820
proxies (signature, subject, expiry, policy, path length)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from jobgate.auth.namespaces import GroupRule
from jobgate.auth.x509 import (
    INHERIT_ALL,
    LIMITED,
    CertificateRejected,
    ClientCertificates,
    MapFileError,
    Revocations,
    SubjectMap,
    identify,
    parse_map,
    parse_proxy_cert_info,
)
from tests.transport.certs import (
    ADMIN_DN,
    INDEPENDENT,
    USER_DN,
    Pki,
    crl_der,
    crl_pem,
    issue,
    make_pki,
    name,
    new_key,
    proxy_cert_info,
    proxy_of,
    with_cn,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def rejected(chain: list[object]) -> str:
    with pytest.raises(CertificateRejected) as info:
        identify(chain)  # type: ignore[arg-type]
    return str(info.value)


def test_user_certificate_is_its_subject(pki: Pki) -> None:
    ident = identify([pki.user.cert, pki.ca.cert])
    assert (ident.subject, ident.proxies) == (USER_DN, 0)


def test_proxy_and_proxy_of_proxy_are_the_user(pki: Pki) -> None:
    proxy = proxy_of(pki.user)
    assert identify([proxy.cert, pki.user.cert, pki.ca.cert]).subject == USER_DN
    again = proxy_of(proxy, cn="99")
    ident = identify([again.cert, proxy.cert, pki.user.cert, pki.ca.cert])
    assert (ident.subject, ident.proxies) == (USER_DN, 2)
    assert ident.expires == min(again.cert.not_valid_after_utc, proxy.cert.not_valid_after_utc)


def test_limited_proxy_is_the_user(pki: Pki) -> None:
    proxy = proxy_of(pki.user, language=LIMITED)
    assert identify([proxy.cert, pki.user.cert, pki.ca.cert]).subject == USER_DN


def test_expired_proxy_says_when(pki: Pki) -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    proxy = proxy_of(pki.user, not_before=old, days=1)
    message = rejected([proxy.cert, pki.user.cert, pki.ca.cert])
    assert "proxy certificate" in message and "expired at" in message
    assert proxy.cert.not_valid_after_utc.isoformat() in message


def test_proxy_not_yet_valid(pki: Pki) -> None:
    proxy = proxy_of(pki.user, not_before=datetime.now(UTC) + timedelta(hours=1))
    assert "not valid before" in rejected([proxy.cert, pki.user.cert, pki.ca.cert])


def test_expired_user_certificate_under_a_fresh_proxy(pki: Pki) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    user = issue(pki.user.subject, pki.ca, not_before=old, days=1)
    proxy = proxy_of(user)
    message = rejected([proxy.cert, user.cert, pki.ca.cert])
    assert f"certificate {USER_DN} expired at" in message


def test_proxy_signed_with_another_key(pki: Pki) -> None:
    forged = proxy_of(pki.user, sign_with=new_key())
    assert "is not signed by" in rejected([forged.cert, pki.user.cert, pki.ca.cert])


def test_proxy_subject_must_extend_the_issuers(pki: Pki) -> None:
    wrong = proxy_of(pki.user, subject=name((NameOID.COMMON_NAME, "Mallory")))
    assert "plus one CN" in rejected([wrong.cert, pki.user.cert, pki.ca.cert])


def test_independent_proxy_does_not_act_for_the_user(pki: Pki) -> None:
    proxy = proxy_of(pki.user, language=INDEPENDENT)
    assert "independent" in rejected([proxy.cert, pki.user.cert, pki.ca.cert])


def test_proxy_without_its_issuer(pki: Pki) -> None:
    assert "not in the chain" in rejected([proxy_of(pki.user).cert])


def test_ca_certificate_is_not_a_user(pki: Pki) -> None:
    assert "CA certificate" in rejected([pki.ca.cert])


def test_proxy_cert_info_parsing() -> None:
    info = parse_proxy_cert_info(proxy_cert_info(INHERIT_ALL, path_length=3))
    assert (info.path_length, info.language) == (3, INHERIT_ALL)
    assert parse_proxy_cert_info(proxy_cert_info(LIMITED)).path_length is None
    with pytest.raises(ValueError):
        parse_proxy_cert_info(b"\x30\x05\x02")


def test_path_length_limits_proxies_below(pki: Pki) -> None:
    top = issue(
        with_cn(pki.user.subject, "1"),
        pki.user,
        proxy=proxy_cert_info(INHERIT_ALL, path_length=0),
    )
    below = proxy_of(top, cn="2")
    message = rejected([below.cert, top.cert, pki.user.cert, pki.ca.cert])
    assert "allows 0 proxies below it" in message


def test_caller_owner_and_admin_dns(pki: Pki, tmp_path: Path) -> None:
    certs = ClientCertificates([ADMIN_DN])
    user = certs.authenticate([pki.user.pem().decode(), pki.ca.pem().decode()])
    assert (user.name, user.method, user.admin) == (f"x509:{USER_DN}", "x509", False)
    admin = certs.authenticate([pki.admin.pem().decode(), pki.ca.pem().decode()])
    assert (admin.name, admin.admin) == (f"x509:{ADMIN_DN}", True)
    with pytest.raises(CertificateRejected, match="cannot be read"):
        certs.authenticate(["not a certificate"])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_proxy_made_by_openssl_is_the_user(pki: Pki, tmp_path: Path) -> None:
    """A proxy from another implementation than the tests' own DER (OpenSSL's
    ``proxyCertInfo`` extension, as grid tools built on it write)."""
    subject = USER_DN + "/CN=424242"
    (tmp_path / "proxy.ext").write_text(
        "proxyCertInfo=critical,language:id-ppl-inheritAll,pathlen:1\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", "proxy.key", "-out", "proxy.csr", "-subj", subject),
    )
    openssl(
        *("x509", "-req", "-in", "proxy.csr", "-CA", str(pki.path("user.pem"))),
        *("-CAkey", str(pki.path("user.key")), "-set_serial", "424242", "-days", "1"),
        *("-extfile", "proxy.ext", "-out", "proxy.pem"),
    )
    proxy = x509.load_pem_x509_certificate((tmp_path / "proxy.pem").read_bytes())
    ident = identify([proxy, pki.user.cert, pki.ca.cert])
    assert (ident.subject, ident.proxies) == (USER_DN, 1)


def test_subjects_file_maps_owners_and_groups(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "grid-mapfile"
    path.write_text(
        "# subject, owner, groups\n"
        f'"{USER_DN}" alice grid/users,grid/admins\n'
        f'"{ADMIN_DN}" iam:ada   # the same person as the OIDC user iam:ada\n'
    )
    certs = ClientCertificates(
        subjects=SubjectMap(path, ["iam"]), admin_groups=GroupRule.of(["grid/admins"], [])
    )
    alice = certs.authenticate([pki.user.pem().decode(), pki.ca.pem().decode()])
    assert (alice.name, alice.groups, alice.admin) == (
        "x509:alice",
        frozenset({"grid/users", "grid/admins"}),
        True,
    )
    ada = certs.authenticate([pki.admin.pem().decode(), pki.ca.pem().decode()])
    assert (ada.name, ada.admin) == ("iam:ada", False)
    # Read again when it changes; unlisted subjects are themselves.
    path.write_text(f'"{ADMIN_DN}" ada\n')
    again = certs.authenticate([pki.user.pem().decode(), pki.ca.pem().decode()])
    assert (again.name, again.groups) == (f"x509:{USER_DN}", frozenset())


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('"/CN=x" egi:bob', "namespace must be one of"),
        ("/CN=x", "expected"),
        ('"/CN=x', "line 1"),
        ("CN=x bob", "expected"),
    ],
)
def test_subjects_file_errors_name_the_line(line: str, words: str) -> None:
    with pytest.raises(MapFileError, match=words):
        parse_map(line + "\n", ["iam"])


def test_revoked_user_certificate_and_its_proxies(pki: Pki, tmp_path: Path) -> None:
    # A grid-security style directory: a DER <hash>.r0 CRL beside files that hold none.
    (tmp_path / "a1b2c3d4.r0").write_bytes(crl_der(pki.ca, pki.user))
    (tmp_path / "a1b2c3d4.0").write_bytes(pki.ca.pem())
    (tmp_path / "a1b2c3d4.signing_policy").write_text("access_id_CA X509 '/C=UK'\n")
    crls = Revocations(tmp_path)
    proxy = proxy_of(pki.user)
    with pytest.raises(CertificateRejected, match=f"certificate {USER_DN} was revoked at"):
        identify([proxy.cert, pki.user.cert, pki.ca.cert], revocations=crls)
    assert identify([pki.admin.cert, pki.ca.cert], revocations=crls).subject == ADMIN_DN


def test_crl_not_signed_by_its_issuer_is_ignored(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "forged.pem"
    forged = x509.load_der_x509_crl(crl_der(pki.ca, pki.user, sign_with=new_key()))
    path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    crls = Revocations(path)
    assert identify([pki.user.cert, pki.ca.cert], revocations=crls).subject == USER_DN


def test_checks_are_reused_only_within_validity_and_the_same_crls(pki: Pki, tmp_path: Path) -> None:
    proxy = proxy_of(pki.user, days=1)
    pems = [proxy.pem().decode(), pki.user.pem().decode(), pki.ca.pem().decode()]
    crl = tmp_path / "ca.crl.pem"
    crl.write_bytes(crl_pem(pki.ca))  # revokes nothing
    certs = ClientCertificates(revocations=Revocations(crl, recheck=0))
    assert certs.authenticate(pems).name == f"x509:{USER_DN}"
    assert certs.authenticate(pems).name == f"x509:{USER_DN}"  # from what was checked
    later = proxy.cert.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(CertificateRejected, match="expired at"):
        certs.authenticate(pems, now=later)
    crl.write_bytes(crl_pem(pki.ca, pki.user))  # a new CRL applies from the next request
    with pytest.raises(CertificateRejected, match="revoked at"):
        certs.authenticate(pems)
