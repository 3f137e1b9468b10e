"""The SSRF guard: by default a task cannot make the gateway reach loopback, private,
link-local or metadata addresses, directly, by a name, or through a redirect.

No request is ever sent to a private or metadata address here: the guard refuses them
before connecting, which is what these tests check.
"""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import tes

from jobgate.staging.guard import Guard, Refused, forbidden
from tests.conftest import Server
from tests.staging.conftest import S3, Ftp, stdout, storage_env, system_logs
from tests.support import pytes_run, pytes_sh, serve_http

# -- the address rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "non-global"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
def test_forbidden_addresses(address: str, reason: str) -> None:
    assert forbidden(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:a9fe:a9fe::1", "6to4 form of a cloud metadata"),  # 169.254.169.254 inside
        ("2002:7f00:1::", "6to4 form of a loopback"),
        ("2002:a00:1::1", "6to4 form of a private"),  # 10.0.0.1
        # Teredo: server 65.54.227.120, then flags, port, and the client's address inverted.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo form of a loopback"),
        ("2001:0:4136:e378:8000:63bf:5601:5601", "Teredo form of a cloud metadata"),
        ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "Teredo form of a private"),  # the server's
    ],
)
def test_tunnelled_forms_are_judged_by_the_ipv4_address_inside(address: str, reason: str) -> None:
    assert forbidden(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1"]
)
def test_global_addresses_pass(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address)) is None


# Loopback (and "this host") in the spellings resolvers and URL parsers accept.
LOOPBACK_FORMS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.0.0.1",
    "0x7f.1",
    "0177.0.0.1",
    "017700000001",
    "127.000.000.001",
    "127.255.255.254",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "api.localhost",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "[64:ff9b::7f00:1]",  # NAT64
    "[2002:7f00:1::1]",  # 6to4
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo
    "0.0.0.0",
    "0",
    "[::]",
]


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
def test_loopback_forms_are_refused_without_and_with_dns(host: str) -> None:
    assert len(LOOPBACK_FORMS) == 26
    guard = Guard()
    assert guard.precheck(host, 80) is not None
    try:
        asyncio.run(guard.resolve(host, 80))
    except Refused:
        pass
    except socket.gaierror:
        # Some resolvers know only "localhost" itself from /etc/hosts: nothing to reach.
        assert host.lower().rstrip(".").endswith("localhost"), host
    else:
        raise AssertionError(f"{host} resolved and passed")


def test_precheck_passes_names_and_global_addresses_and_the_allow_list() -> None:
    guard = Guard.from_entries(["127.0.0.1:9000"], "JOBGATE_WEBHOOK_ALLOWED_HOSTS")
    assert guard.precheck("example.org", 80) is None  # judged when resolved
    assert guard.precheck("8.8.8.8", 443) is None
    assert guard.precheck("127.0.0.1", 9000) is None
    why = guard.precheck("127.0.0.1", 9001)
    assert why is not None and "loopback" in why and "JOBGATE_WEBHOOK_ALLOWED_HOSTS" in why


def test_allow_list_entries_match_host_and_port() -> None:
    guard = Guard.from_entries(["minio.internal", "127.0.0.1:9000", "[::1]:8080", " "])
    assert guard.is_allowed("MINIO.internal", 443)
    assert guard.is_allowed("127.0.0.1", 9000)
    assert not guard.is_allowed("127.0.0.1", 9001)
    assert guard.is_allowed("[::1]", 8080) and not guard.is_allowed("::1", 80)
    assert asyncio.run(guard.resolve("127.0.0.1", 9000)) == ["127.0.0.1"]
    with pytest.raises(Refused, match="loopback"):
        asyncio.run(guard.resolve("127.0.0.1", 9001))
    # Another spelling of the same address is not the listed host.
    with pytest.raises(Refused, match=r"127\.1 resolves to 127\.0\.0\.1, which is a loopback"):
        asyncio.run(guard.resolve("127.1", 9000))


# -- end to end, with the default settings ------------------------------------------------


class Files(http.server.BaseHTTPRequestHandler):
    """Counts requests; /redirect?to=URL answers 302 to URL."""

    requests: list[str] = []  # noqa: RUF012 - shared by the handler instances on purpose

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"reachable\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    """A local HTTP server the guard must keep tasks away from."""
    with serve_http(Files) as base:
        yield base


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    """A second server, the one the operator allow-lists (by host and port)."""
    with serve_http(Files) as base:
        yield base


@pytest.fixture(scope="module")
def default_server(
    tmp_path_factory: pytest.TempPathFactory, s3: S3, stage_dir: Path
) -> Iterator[Server]:
    """JOBGATE_STAGING_ALLOWED_HOSTS unset: the default an operator gets."""
    env = storage_env(s3, stage_dir, JOBGATE_STAGING_ALLOWED_HOSTS=None)
    srv = Server(tmp_path_factory.mktemp("guard") / "data", env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def listing_server(
    tmp_path_factory: pytest.TempPathFactory, s3: S3, stage_dir: Path, redirector: str
) -> Iterator[Server]:
    """Only the redirector's host:port allow-listed."""
    allowed = redirector.removeprefix("http://")
    env = storage_env(s3, stage_dir, JOBGATE_STAGING_ALLOWED_HOSTS=allowed)
    srv = Server(tmp_path_factory.mktemp("guard-list") / "data", env).start()
    yield srv
    srv.stop()


def refused_line(server: Server, url: str, *, output: bool = False) -> str:
    """Run a task reading (or writing) ``url``; assert it was refused; its log line."""
    client = tes.HTTPClient(server.url, timeout=30)
    if output:
        task = tes.Task(
            outputs=[tes.Output(url=url, path="/data/o")], executors=[pytes_sh("echo x > data/o")]
        )
    else:
        task = tes.Task(
            inputs=[tes.Input(url=url, path="/data/x")], executors=[pytes_sh("cat data/x")]
        )
    done = pytes_run(client, task)
    assert done.state == "SYSTEM_ERROR", (url, done)
    assert "reachable" not in stdout(done)
    line = next((ln for ln in system_logs(done).splitlines() if "refused" in ln), "")
    assert line, (url, system_logs(done))
    return line


def test_default_refuses_loopback_private_and_metadata_urls(
    default_server: Server, target: str
) -> None:
    port = target.rsplit(":", 1)[1]
    before = len(Files.requests)
    cases = {
        f"{target}/secret": "loopback",
        f"http://localhost:{port}/secret": "localhost resolves to 127.0.0.1",
        f"http://2130706433:{port}/secret": "loopback",  # 127.0.0.1 as one number
        f"http://[::1]:{port}/secret": "loopback",
        f"http://[::ffff:127.0.0.1]:{port}/secret": "loopback",
        "http://10.20.30.40/admin": "private",
        "http://192.168.0.1/": "private",
        "http://169.254.169.254/latest/meta-data/": "cloud metadata",
        "http://[fd00:ec2::254]/latest/meta-data/": "cloud metadata",
        "https://[fe80::1]/": "link-local",
    }
    for url, why in cases.items():
        line = refused_line(default_server, url)
        assert url in line and why in line, (url, line)
        assert "JOBGATE_STAGING_ALLOWED_HOSTS" in line
    assert len(Files.requests) == before  # nothing reached the local server


def test_default_refuses_the_local_s3_and_ftp_test_servers(
    default_server: Server, s3: S3, ftp: Ftp
) -> None:
    s3.put("guard/x.txt", b"x")
    for url in [s3.url("guard/x.txt"), ftp.url("x.txt")]:
        line = refused_line(default_server, url)
        assert "loopback" in line, line
    for url in [s3.url("guard/out.txt"), ftp.url("out.txt")]:
        assert "loopback" in refused_line(default_server, url, output=True)
    assert s3.keys("guard/") == ["guard/x.txt"]
    assert not (ftp.root / "out.txt").exists()


def test_allow_listed_host_port_passes_and_a_redirect_to_loopback_is_refused(
    listing_server: Server, redirector: str, target: str
) -> None:
    client = tes.HTTPClient(listing_server.url, timeout=30)
    ok = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=f"{redirector}/plain", path="/data/x")],
            executors=[pytes_sh("cat data/x")],
        ),
    )
    assert ok.state == "COMPLETE", system_logs(ok)
    assert stdout(ok) == "reachable\n"

    before = len(Files.requests)
    for hop in [f"{target}/secret", "http://169.254.169.254/latest/meta-data/"]:
        url = f"{redirector}/redirect?to={hop}"
        line = refused_line(listing_server, url)
        assert url in line and f"redirect to {hop}" in line, line
    # The redirector was asked twice; the target never.
    assert [p for p in Files.requests[before:] if not p.startswith("/redirect")] == []
    # Same host, other port: not on the list.
    assert "loopback" in refused_line(listing_server, f"{target}/secret")
