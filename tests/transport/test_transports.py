"""A real ``jobgate serve`` with TLS, client certificates and a UNIX socket at once.

One server for the module: HTTPS on TCP (its certificate from the tests' CA), accepting
client certificates of that CA (``x509``) and service tokens, and a UNIX socket.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobgate.client import Client
from tests.conftest import Server
from tests.support import exit_codes, run, sh_task, stdouts
from tests.transport.certs import (
    ADMIN_DN,
    USER_DN,
    Pki,
    crl_pem,
    issue,
    make_pki,
    proxy_of,
    with_cn,
)
from tests.transport.certs import new_key as fresh_key

USER = f"x509:{USER_DN}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    revoked = issue(with_cn(pki.ca.subject, "Revoked Rita"), pki.ca)
    pki.write("crl.pem", crl_pem(pki.ca, revoked))
    pki.client_file("revoked-client.pem", revoked)
    # httpx, the CLI and the Server fixture's health check trust the tests' CA this way.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_CERT_FILE", str(pki.path("ca.pem")))
        yield pki


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("tls") / "data"
    srv = Server(
        data,
        {
            "JOBGATE_AUTH": "x509,token",
            "JOBGATE_TLS_CERT": str(pki.path("server.pem")),
            "JOBGATE_TLS_KEY": str(pki.path("server.key")),
            "JOBGATE_TLS_CLIENT_CA": str(pki.path("ca.pem")),
            "JOBGATE_X509_ADMIN_DNS": ADMIN_DN,
            "JOBGATE_TLS_CRL": str(pki.path("crl.pem")),
            "JOBGATE_UDS": str(data.parent / "jobgate.sock"),
        },
    )
    srv.url = f"https://127.0.0.1:{srv.port}"
    srv.start()
    yield srv
    srv.stop()


def sock_path(server: Server) -> Path:
    return server.data_dir.parent / "jobgate.sock"


def mtls(pki: Pki, server: Server, certfile: Path | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if certfile is not None:
        ctx.load_cert_chain(certfile)
    return httpx.Client(base_url=server.url, verify=ctx, timeout=30)


def as_cert(pki: Pki, server: Server, certfile: Path | None) -> httpx.Response:
    with mtls(pki, server, certfile) as client:
        return client.get("/api/v1/me")


def assert_401(resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert body["errors"][0]["where"] == "tls.client_certificate", body
    for word in words:
        assert word in body["message"], body


# -- TLS and client certificates --------------------------------------------------------


def test_https_served_and_plain_http_refused(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url.replace("https:", "http:") + "/healthz")


def test_user_certificate_is_the_user(pki: Pki, server: Server) -> None:
    user = pki.client_file("user-client.pem", pki.user)
    me = as_cert(pki, server, user).json()
    assert (me["name"], me["method"], me["admin"]) == (USER, "x509", False)
    admin = pki.client_file("admin-client.pem", pki.admin)
    me = as_cert(pki, server, admin).json()
    assert (me["name"], me["admin"]) == (f"x509:{ADMIN_DN}", True)


def test_proxy_is_the_user_and_owns_the_users_jobs(pki: Pki, server: Server) -> None:
    proxy = proxy_of(pki.user)
    proxy_file = pki.client_file("proxy.pem", proxy, pki.user)
    user_file = pki.client_file("user-client.pem", pki.user)
    with mtls(pki, server, proxy_file) as client:
        assert client.get("/api/v1/me").json()["name"] == USER
        r = client.post("/api/v1/jobs", json={"name": "by-proxy", "script": "true", "hold": True})
        assert r.status_code == 201, r.text
        job = r.json()
    assert job["owner"] == USER
    with mtls(pki, server, user_file) as client:
        assert client.get(f"/api/v1/jobs/{job['id']}").status_code == 200
    with mtls(pki, server, pki.client_file("admin-client.pem", pki.admin)) as client:
        assert client.get(f"/api/v1/jobs/{job['id']}").json()["owner"] == USER
    token = (server.data_dir / "admin-token").read_text().strip()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as tok:
        r = tok.post("/api/v1/tokens", json={"owner": "robot", "scopes": ["submit"]})
        robot = r.json()["token"]
    with mtls(pki, server, user_file) as client:
        # A token wins over the certificate the connection presents; the robot sees
        # nothing of Alice's.
        r = client.get(f"/api/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {robot}"})
    assert r.status_code == 404


def test_expired_proxy_is_a_401_saying_so(pki: Pki, server: Server) -> None:
    from datetime import UTC, datetime, timedelta

    old = proxy_of(pki.user, not_before=datetime.now(UTC) - timedelta(hours=3), days=0.1)
    resp = as_cert(pki, server, pki.client_file("expired.pem", old, pki.user))
    assert_401(resp, "proxy certificate", "expired at")


def test_revoked_certificate_is_a_401_saying_so(pki: Pki, server: Server) -> None:
    assert_401(as_cert(pki, server, pki.path("revoked-client.pem")), "Revoked Rita", "revoked at")


def test_no_certificate_is_a_401(pki: Pki, server: Server) -> None:
    assert_401(as_cert(pki, server, None), "client certificate")


@pytest.mark.parametrize("kind", ["untrusted", "forged"])
def test_untrusted_or_forged_proxy_fails_the_handshake(pki: Pki, server: Server, kind: str) -> None:
    if kind == "untrusted":  # a proxy of a same-named user from a CA not trusted
        path = pki.client_file("untrusted.pem", proxy_of(pki.stranger), pki.stranger)
    else:  # a proxy naming the trusted user, signed with another key
        path = pki.client_file("forged.pem", proxy_of(pki.user, sign_with=fresh_key()), pki.user)
    with pytest.raises(httpx.TransportError):
        as_cert(pki, server, path)
    # The server goes on serving.
    assert as_cert(pki, server, pki.client_file("user-client.pem", pki.user)).status_code == 200


def test_cross_site_request_with_a_certificate_is_refused(pki: Pki, server: Server) -> None:
    with mtls(pki, server, pki.client_file("user-client.pem", pki.user)) as client:
        job = {"name": "csrf", "script": "true", "hold": True}
        r = client.post("/api/v1/jobs", json=job, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["errors"][0]["where"] == "header.Origin"
        r = client.post("/api/v1/jobs", json=job, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        own = {"Origin": server.url}
        assert client.post("/api/v1/jobs", json=job, headers=own).status_code == 201


def test_tes_task_runs_over_mtls(pki: Pki, server: Server) -> None:
    with mtls(pki, server, pki.client_file("proxy.pem", proxy_of(pki.user), pki.user)) as c:
        c.base_url = httpx.URL(server.url + "/ga4gh/tes/v1")
        task = run(c, sh_task("echo over-mtls"))
    assert task["state"] == "COMPLETE" and stdouts(task) == ["over-mtls\n"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JOBGATE_CONFIG": "/nonexistent", **(env or {})},
    )


def test_cli_over_mtls(pki: Pki, server: Server) -> None:
    cert, key = str(pki.path("user.pem")), str(pki.path("user.key"))
    me = cli("--url", server.url, "--cert", cert, "--key", key, "--json", "whoami")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["name"] == USER
    # `ls` is answered by the fast path (http.client), a proxy file from X509_USER_PROXY.
    proxy = pki.client_file("proxy.pem", proxy_of(pki.user), pki.user)
    ls = cli("--url", server.url, "ls", env={"X509_USER_PROXY": str(proxy)})
    assert ls.returncode == 0, ls.stderr
    bad = cli("--url", server.url, "--cert", "/nonexistent.pem", "ls")
    assert bad.returncode == 1 and "cannot load the client certificate" in bad.stderr
    stranger = pki.client_file("stranger.pem", pki.stranger)
    for command in ("ls", "whoami"):  # the fast path, and httpx
        refused = cli("--url", server.url, "--cert", str(stranger), command)
        assert refused.returncode == 1, refused
        assert "does not accept the client certificate" in refused.stderr, refused.stderr


# -- the UNIX socket --------------------------------------------------------------------


def test_socket_is_private_to_its_owner(server: Server) -> None:
    st = sock_path(server).lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


def unix_client(server: Server) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(sock_path(server)))
    return httpx.Client(base_url="http://jobgate", transport=transport, timeout=30)


def test_socket_requests_are_its_owner(server: Server) -> None:
    import pwd

    with unix_client(server) as c:
        me = c.get("/api/v1/me").json()
        # Credentials sent through the socket do not change who the caller is.
        bogus = c.get("/api/v1/me", headers={"Authorization": "Bearer jgt_nonsense"}).json()
    owner = f"unix:{pwd.getpwuid(os.getuid()).pw_name}"
    assert (me["name"], me["method"], me["admin"]) == (owner, "unix", True)
    assert bogus["name"] == owner


def test_client_and_tes_over_the_socket(server: Server) -> None:
    url = f"unix://{sock_path(server)}"
    with Client(url) as jg:
        job = jg.wait(jg.submit({"name": "uds", "script": "echo via-socket"}).id, timeout=60)
    assert job.state == "COMPLETE" and job.owner is not None and job.owner.startswith("unix:")
    with unix_client(server) as c:
        c.base_url = httpx.URL("http://jobgate/ga4gh/tes/v1")
        task = run(c, sh_task("echo tes-socket"))
    assert exit_codes(task) == [0] and stdouts(task) == ["tes-socket\n"]


def test_cli_over_the_socket(server: Server) -> None:
    url = f"unix://{sock_path(server)}"
    ran = cli("--url", url, "run", "--", "echo", "cli-socket")
    assert ran.returncode == 0 and "cli-socket" in ran.stdout, ran.stderr
    ls = cli("--url", url, "ls", "-q")  # the fast path
    assert ls.returncode == 0 and ls.stdout.strip(), ls.stderr
    status = cli("--url", url, "status", ls.stdout.split()[0])
    assert status.returncode == 0, status.stderr
    gone = cli("--url", "unix:///nonexistent/jobgate.sock", "ls")
    assert gone.returncode == 1 and "cannot reach jobgate" in gone.stderr


def test_metrics_through_the_socket_and_for_an_admin_certificate(pki: Pki, server: Server) -> None:
    with unix_client(server) as c:
        assert c.get("/metrics").status_code == 200
    with mtls(pki, server, pki.client_file("admin-client.pem", pki.admin)) as c:
        assert c.get("/metrics").status_code == 200
    with mtls(pki, server, pki.client_file("user-client.pem", pki.user)) as c:
        # TLS from 127.0.0.1 is loopback (the default rule): readable without admin too.
        assert c.get("/metrics").status_code == 200


@pytest.mark.skipif(
    os.getuid() != 0 or not os.path.exists("/usr/bin/python3"),
    reason="connecting as another user needs root and a Python that user may run",
)
def test_widened_socket_still_refuses_other_users(server: Server) -> None:
    # A hard link in a directory others may pass reaches the same socket.
    public = Path(tempfile.mkdtemp(prefix="jobgate-uds-"))
    public.chmod(0o711)
    path = public / "link.sock"
    os.link(sock_path(server), path)
    os.chmod(path, 0o666)
    try:
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"s.connect({str(path)!r})\n"
            "s.sendall(b'GET /api/v1/me HTTP/1.1\\r\\nHost: x\\r\\n'\n"
            "          b'Connection: close\\r\\n\\r\\n')\n"
            "data = b''\n"
            "while chunk := s.recv(65536):\n"
            "    data += chunk\n"
            "sys.stdout.write(data.decode())\n"
        )
        run_as_nobody = subprocess.run(
            ["/usr/bin/python3", "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            user=65534,
            group=65534,
            extra_groups=[],
        )
    finally:
        os.chmod(path, 0o600)
        shutil.rmtree(public)
    head, _, body = run_as_nobody.stdout.partition("\n\n")  # text mode: \r\n read as \n
    assert head.startswith("HTTP/1.1 401"), run_as_nobody
    assert body, run_as_nobody
    error = json.loads(body)["errors"][0]
    assert error["where"] == "socket.peer" and "uid 65534" in error["what"]


def test_openapi_names_the_client_certificate_scheme(server: Server) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["clientCertificate"]["type"] == "mutualTLS"
    assert {"clientCertificate": []} in doc["paths"]["/api/v1/jobs"]["post"]["security"]
