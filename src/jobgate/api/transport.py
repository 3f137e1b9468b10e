"""What a connection tells about its client: TLS served directly, client certificates,
the UNIX socket.

The server (:mod:`jobgate.api.server`) builds the TLS context here and, for every
connection, the ASGI scope extensions its requests carry:

- ``tls`` (the ASGI TLS extension): ``client_cert_chain``, the client's certificate chain
  as OpenSSL verified it, PEM, leaf first (empty without a client certificate);
- ``jobgate.unix``: ``peer_uid``, the uid of the process at the other end of the UNIX
  socket (from the kernel).

OpenSSL checks a client chain's signatures and its trust anchor at the handshake, proxy
certificates allowed, but not its dates (``X509_V_FLAG_NO_CHECK_TIME``):
:mod:`jobgate.auth.x509` checks those per request, so that an expired certificate is a
401 saying what expired, and a long keep-alive connection ends with its proxy. A chain
that does not lead to a trusted CA fails the handshake (a TLS alert: no HTTP exists yet).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import stat
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

log = logging.getLogger(__name__)

TLS_EXTENSION = "tls"
EXPIRY_WARNING = timedelta(days=14)
UNIX_EXTENSION = "jobgate.unix"
NO_CHECK_TIME = 0x200000
"""OpenSSL's ``X509_V_FLAG_NO_CHECK_TIME`` (not among :class:`ssl.VerifyFlags`)."""


def _readable(setting: str, path: Path) -> None:
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise ValueError(f"{setting} {path}: cannot read it ({exc.strerror})") from None


def server_context(cert: Path, key: Path | None, client_ca: Path | None) -> ssl.SSLContext:
    """The TLS context served with; raises ValueError naming the setting and file at fault."""
    _readable("JOBGATE_TLS_CERT", cert)
    if key is not None:
        _readable("JOBGATE_TLS_KEY", key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            what = f"JOBGATE_TLS_KEY {key}: not the key of JOBGATE_TLS_CERT {cert}"
        elif key is None:
            what = f"JOBGATE_TLS_CERT {cert}: no PEM certificate and key in it ({exc.reason})"
        else:
            what = f"JOBGATE_TLS_CERT {cert} / JOBGATE_TLS_KEY {key}: {exc.reason}"
        raise ValueError(what) from None
    _warn_expiry(cert)
    if client_ca is not None:
        _readable("JOBGATE_TLS_CLIENT_CA", client_ca)
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ValueError(
                f"JOBGATE_TLS_CLIENT_CA {client_ca}: no PEM CA certificates in it ({exc.reason})"
            ) from None
        # Optional: callers without a certificate still use tokens or passwords.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags = ssl.VerifyFlags(
            ctx.verify_flags | ssl.VERIFY_ALLOW_PROXY_CERTS | NO_CHECK_TIME
        )
    return ctx


def _warn_expiry(cert: Path) -> None:
    """Log when the server's certificate has expired or expires soon (clients will refuse
    it; serving goes on, so that a renewal can be put in place and the server restarted)."""
    try:
        ends = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    except ValueError:
        return
    left = ends - datetime.now(UTC)
    if left <= timedelta(0):
        log.error("JOBGATE_TLS_CERT %s expired at %s: clients will refuse it", cert, ends)
    elif left <= EXPIRY_WARNING:
        log.warning("JOBGATE_TLS_CERT %s expires at %s", cert, ends)


def _verified_chain(obj: Any) -> list[str]:
    """The peer's chain as OpenSSL verified it, PEM, leaf first."""
    if obj.getpeercert(binary_form=True) is None:
        return []
    public = getattr(obj, "get_verified_chain", None)  # Python 3.13+: DER bytes
    if public is not None:
        return [ssl.DER_cert_to_PEM_cert(der) for der in public()]
    inner = getattr(obj, "_sslobj", None)  # 3.10-3.12: the C object's certificates
    chain = inner.get_verified_chain() if inner is not None else None
    return [cert.public_bytes() for cert in chain or ()]


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a UNIX socket (Linux ``SO_PEERCRED``)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    except OSError:
        return None
    return int(uid)


def connection_extensions(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """The scope extensions of a new connection's requests (see the module docstring)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        return {UNIX_EXTENSION: {"peer_uid": peer_uid(sock)}}
    obj = transport.get_extra_info("ssl_object")
    if obj is None:
        return {}
    return {TLS_EXTENSION: {"client_cert_chain": _verified_chain(obj)}}


def bind_unix(path: Path) -> socket.socket:
    """A UNIX stream socket bound at ``path``, mode 0600; not yet listening.

    A stale socket file (nobody listens) is replaced; raises ValueError when another
    server listens there, or the path is not a socket, or cannot be bound.
    """
    path = path.expanduser().absolute()
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise ValueError(f"JOBGATE_UDS {path}: exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)
            else:
                raise ValueError(f"JOBGATE_UDS {path}: another server listens on it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no moment at which others could connect
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
    except OSError as exc:
        sock.close()
        raise ValueError(f"JOBGATE_UDS {path}: cannot bind ({exc.strerror})") from None
    finally:
        os.umask(old)
    sock.setblocking(False)
    return sock


def unlink_unix(sock: socket.socket, path: Path) -> None:
    """Remove the socket file at exit (if still a socket) and close ``sock``; twice is fine."""
    path = path.expanduser().absolute()
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except OSError:
        pass
    sock.close()
