"""Starting with transports: the UNIX socket alone, and clear errors for TLS files and
socket paths that cannot be used."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobgate.api.transport import bind_unix, server_context
from jobgate.config import Settings
from tests.conftest import free_port
from tests.transport.certs import Pki, make_pki
from tests.transport.unixhttp import raw_unix_get


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def serve(*args: str, data: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobgate", "serve", "--data-dir", str(data), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "JOBGATE_AUTH": "token", **(env or {})},
    )


def wait_unix(path: Path, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """``/healthz`` through the socket, once the server answers there."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return raw_unix_get(path, "/healthz")
        except (ConnectionRefusedError, FileNotFoundError):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.1)


def test_socket_alone_replaces_a_stale_file_and_removes_it_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "only.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # left by a server that died: nobody listens
    stale.close()
    port = free_port()
    proc = serve("--uds", str(path), "--no-tcp", "--port", str(port), data=tmp_path / "d")
    try:
        health = wait_unix(path, proc)
        assert health["status"] == "ok", health
        me = raw_unix_get(path, "/api/v1/me")
        assert me["method"] == "unix" and me["scopes"] == ["admin", "read", "submit"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert not path.exists()


def test_socket_owner_and_scope_settings(tmp_path: Path) -> None:
    path = tmp_path / "narrow.sock"
    env = {"JOBGATE_UDS_OWNER": "alice", "JOBGATE_UDS_SCOPE": "read"}
    proc = serve("--uds", str(path), "--no-tcp", data=tmp_path / "d", env=env)
    try:
        wait_unix(path, proc)
        me = raw_unix_get(path, "/api/v1/me")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert (me["name"], me["scopes"], me["admin"]) == ("unix:alice", ["read"], False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "/nonexistent/cert.pem"], "JOBGATE_TLS_CERT /nonexistent/cert.pem"),
        (["--tls-cert", "@server.pem", "--tls-key", "@user.key"], "not the key of"),
    ],
)
def test_serve_refuses_bad_tls_files(
    pki: Pki, tmp_path: Path, args: list[str], message: str
) -> None:
    argv = [str(pki.path(a[1:])) if a.startswith("@") else a for a in args]
    proc = serve(*argv, "--port", str(free_port()), data=tmp_path / "d")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert message in output


def test_tls_file_errors_name_the_setting_and_file(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"JOBGATE_TLS_KEY .*: cannot read it"):
        server_context(pki.path("server.pem"), tmp_path / "missing.key", None)
    unreadable = tmp_path / "empty.pem"
    unreadable.write_text("not PEM\n")
    with pytest.raises(ValueError, match=r"JOBGATE_TLS_CERT .*no PEM certificate"):
        server_context(unreadable, None, None)
    with pytest.raises(ValueError, match=r"JOBGATE_TLS_CLIENT_CA .*no PEM CA"):
        server_context(pki.path("server.pem"), pki.path("server.key"), unreadable)
    both = pki.write("both.pem", pki.server.pem(), pki.server.key_pem())
    assert server_context(both, None, pki.path("ca.pem")).verify_mode.name == "CERT_OPTIONAL"


def test_socket_path_errors(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(ValueError, match="exists and is not a socket"):
        bind_unix(regular)
    with pytest.raises(ValueError, match="cannot bind"):
        bind_unix(tmp_path / "missing-dir" / "s.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(tmp_path / "live.sock"))
    live.listen()
    try:
        with pytest.raises(ValueError, match="another server listens"):
            bind_unix(tmp_path / "live.sock")
    finally:
        live.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"auth": ("x509",)}, "JOBGATE_AUTH=x509 needs JOBGATE_TLS_CLIENT_CA"),
        ({"tcp": False}, "JOBGATE_TCP=false needs JOBGATE_UDS"),
        ({"tls_client_ca": Path("/ca.pem")}, "JOBGATE_TLS_CLIENT_CA needs JOBGATE_TLS_CERT"),
        ({"uds_owner": "basic:"}, "JOBGATE_UDS_OWNER 'basic:'"),
        ({"tls_cert": Path("/c.pem"), "tcp": False, "uds": Path("/s")}, "applies to TCP"),
    ],
)
def test_settings_refuse_incomplete_transports(env: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**env)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read it"), ('"/CN=x" nowhere:bob\n', "line 1: owner 'nowhere:bob'")],
)
def test_serve_refuses_a_bad_subjects_file(
    pki: Pki, tmp_path: Path, content: str | None, message: str
) -> None:
    subjects = tmp_path / "grid-mapfile"
    if content is not None:
        subjects.write_text(content)
    env = {
        "JOBGATE_AUTH": "x509",
        "JOBGATE_TLS_CERT": str(pki.path("server.pem")),
        "JOBGATE_TLS_KEY": str(pki.path("server.key")),
        "JOBGATE_TLS_CLIENT_CA": str(pki.path("ca.pem")),
        "JOBGATE_X509_SUBJECTS_FILE": str(subjects),
    }
    proc = serve("--port", str(free_port()), data=tmp_path / "d", env=env)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert f"JOBGATE_X509_SUBJECTS_FILE {subjects}" in output or str(subjects) in output
    assert message in output


def test_app_refuses_an_unreadable_crl_path(pki: Pki, tmp_path: Path) -> None:
    from jobgate.api.app import create_app

    settings = Settings(
        auth=("x509",),
        tls_cert=pki.path("server.pem"),
        tls_client_ca=pki.path("ca.pem"),
        tls_crl=tmp_path / "missing",
        data_dir=tmp_path / "d",
    )
    with pytest.raises(ValueError, match=r"JOBGATE_TLS_CRL .*missing: cannot read it"):
        create_app(settings)


def test_an_expiring_server_certificate_is_logged(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography.x509.oid import NameOID

    from tests.transport.certs import issue, name

    soon = issue(
        name((NameOID.COMMON_NAME, "127.0.0.1")),
        pki.ca,
        not_before=datetime.now(UTC) - timedelta(days=80),
        days=83,
    )
    cert = pki.write("soon.pem", soon.pem(), soon.key_pem())
    with caplog.at_level("WARNING", logger="jobgate.api.transport"):
        server_context(cert, None, None)
    assert f"JOBGATE_TLS_CERT {cert} expires at" in caplog.text
