"""Connections that make no requests cannot take the server's open files.

A real server runs with the usual 1,024 open files (soft and hard, so it cannot raise
them); the test opens more idle TCP connections than that, on loopback only, and closes
them all afterwards.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server

SERVER_FILES = 1024
FLOOD = 1100
HEADER_TIMEOUT = 2.0
ENV = {"JOBGATE_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("conn") / "data", ENV, nofile=SERVER_FILES).start()
    yield server
    server.stop()


@pytest.fixture()
def room() -> None:
    """The test process needs FLOOD sockets beside its own files: raise its soft limit to
    that if it is lower (never above what is needed), or skip where the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + 200
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"the open-files hard limit {hard} is below the {need} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to the server that send nothing; all closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (reading gives EOF or a reset)."""
    closed = 0
    for s in socks:  # non-blocking: no data and no EOF yet raises BlockingIOError
        try:
            if s.recv(1024) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except ConnectionError:
            closed += 1
    return closed


def open_files(server: Server) -> int:
    assert server.proc is not None
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def healthz_seconds(url: str) -> float:
    start = time.monotonic()
    r = httpx.get(url + "/healthz", timeout=5)
    assert r.status_code == 200, r.text
    return time.monotonic() - start


def test_more_idle_connections_than_open_files_do_not_stop_the_server(
    srv: Server, room: None
) -> None:
    with idle_connections(srv.port, FLOOD) as socks:
        # A new client is served while the flood is still open: the connection that has
        # waited longest for a request makes room for it.
        assert healthz_seconds(srv.url) < 2
        # The connection limit (fitted to the open files) leaves room for the service's own.
        assert open_files(srv) < SERVER_FILES - 200
        time.sleep(HEADER_TIMEOUT + 1)
        assert healthz_seconds(srv.url) < 2
        # Every idle connection was closed by the server: none holds an open file there.
        assert closed_by_server(socks) == FLOOD
        assert open_files(srv) < 100
    assert "JOBGATE_MAX_CONNECTIONS" in srv.log()  # the limit was reached, and said so


def test_a_request_head_sent_slowly_is_cut_off(srv: Server) -> None:
    """A valid head that never ends (one more byte of a header every 50 ms), on a
    keep-alive connection after a first request (idle new ones: the flood test above)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        with contextlib.suppress(ConnectionError):
            while time.monotonic() - start < HEADER_TIMEOUT + 4:
                s.send(b"a")
                time.sleep(0.05)
                if select.select([s], [], [], 0)[0] and s.recv(1024) == b"":
                    break
        took = time.monotonic() - start
    assert HEADER_TIMEOUT - 0.5 < took < HEADER_TIMEOUT + 1.5


def test_a_request_under_way_is_not_cut_off(srv: Server) -> None:
    """Only the head has a deadline: a body may take longer, and so may an answer."""
    body = b'{"script": "true"}'
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        time.sleep(HEADER_TIMEOUT + 1)
        s.sendall(body)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 201"), answer


def test_keep_alive_connection_serves_requests_one_after_another(srv: Server) -> None:
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT / 2)


def test_an_open_files_limit_too_small_for_any_connections_refuses_to_start(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "data", nofile=300)
    proc = subprocess.run(
        [sys.executable, "-m", "jobgate", "serve", "--port", str(server.port)],
        env={**server.env, "JOBGATE_DATA_DIR": str(tmp_path / "data")},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "open-files limit 300" in proc.stderr
    assert "ulimit -n" in proc.stderr


def test_the_connection_limit_is_lowered_to_fit_the_open_files(srv: Server) -> None:
    assert "JOBGATE_MAX_CONNECTIONS=4096 does not fit in the open-files limit 1024" in srv.log()
