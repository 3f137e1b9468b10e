"""Requests per second over each transport: TCP, TLS, mutual TLS (user certificate and
RFC 3820 proxy), and the UNIX socket.

Starts two ``jobgate serve`` processes on temporary data directories: one on plain TCP
with a UNIX socket (service token over TCP; the socket's own identity), one serving TLS
with client certificates (``JOBGATE_AUTH=x509,token``: a token over TLS, or a client
certificate). Certificates come from the tests' PKI helper. For each transport it sends N
sequential ``GET /ga4gh/tes/v1/tasks/{id}`` on one keep-alive connection, then M requests
each on a new connection (what a TLS handshake costs), and prints requests per second and
the server's CPU per request.

    .venv/bin/python bench/transport_bench.py [-n 2000] [-m 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from tes_bench import Server, ms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.transport.certs import Pki, make_pki, proxy_of

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


def tls_context(pki: Pki, certfile: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if certfile is not None:
        ctx.load_cert_chain(certfile)
    return ctx


def measure(
    srv: Server, make: Callable[[], httpx.Client], path: str, n: int, fresh: int
) -> tuple[float, float, float]:
    """(requests/s kept alive, server CPU per request, requests/s on new connections)."""
    with make() as c:
        for _ in range(50):  # warm up: caches, the first handshake
            assert c.get(path).status_code == 200
        cpu0, t0 = srv.own_cpu(), time.perf_counter()
        for _ in range(n):
            r = c.get(path)
            assert r.status_code == 200, r.text
        wall = time.perf_counter() - t0
        cpu = (srv.own_cpu() - cpu0) / n
    t0 = time.perf_counter()
    for _ in range(fresh):
        with make() as c:
            assert c.get(path).status_code == 200
    fresh_wall = time.perf_counter() - t0
    return n / wall, cpu, fresh / fresh_wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="keep-alive requests per transport")
    ap.add_argument("-m", type=int, default=200, help="requests on new connections")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jobgate-transport-bench-"))
    pki = make_pki(root)
    os.environ["SSL_CERT_FILE"] = str(pki.path("ca.pem"))  # the TLS server's health check
    sock = root / "plain" / "jobgate.sock"
    plain = Server(root / "plain" / "data", {"JOBGATE_AUTH": "token", "JOBGATE_UDS": str(sock)})
    tls = Server(
        root / "tls" / "data",
        {
            "JOBGATE_AUTH": "x509,token",
            "JOBGATE_TLS_CERT": str(pki.path("server.pem")),
            "JOBGATE_TLS_KEY": str(pki.path("server.key")),
            "JOBGATE_TLS_CLIENT_CA": str(pki.path("ca.pem")),
        },
    )
    tls.url = f"https://127.0.0.1:{tls.port}"
    user = pki.client_file("user-client.pem", pki.user)
    proxy = pki.client_file("proxy.pem", proxy_of(pki.user), pki.user)
    rows = []
    plain.start()
    tls.start()
    try:
        bearer = {
            s: {"Authorization": "Bearer " + (s.data_dir / "admin-token").read_text().strip()}
            for s in (plain, tls)
        }
        with httpx.Client(base_url=tls.url, headers=bearer[tls]) as c:
            tls_task = c.post("/ga4gh/tes/v1/tasks", json=TASK).json()["id"]
        with httpx.Client(base_url=plain.url, headers=bearer[plain]) as c:
            plain_task = c.post("/ga4gh/tes/v1/tasks", json=TASK).json()["id"]
        cases: list[tuple[str, Server, Callable[[], httpx.Client], str]] = [
            (
                "tcp",
                plain,
                lambda: httpx.Client(base_url=plain.url, headers=bearer[plain]),
                plain_task,
            ),
            (
                "uds",
                plain,
                lambda: httpx.Client(
                    base_url="http://jobgate", transport=httpx.HTTPTransport(uds=str(sock))
                ),
                plain_task,
            ),
            (
                "tls",
                tls,
                lambda: httpx.Client(
                    base_url=tls.url, headers=bearer[tls], verify=tls_context(pki, None)
                ),
                tls_task,
            ),
            (
                "mtls",
                tls,
                lambda: httpx.Client(base_url=tls.url, verify=tls_context(pki, user)),
                "",
            ),
            (
                "mtls-proxy",
                tls,
                lambda: httpx.Client(base_url=tls.url, verify=tls_context(pki, proxy)),
                "",
            ),
        ]
        for name, srv, make, task_id in cases:
            if not task_id:  # the certificate's own task (admins' would be visible anyway)
                with make() as c:
                    task_id = c.post("/ga4gh/tes/v1/tasks", json=TASK).json()["id"]
            rows.append(
                (name, *measure(srv, make, f"/ga4gh/tes/v1/tasks/{task_id}", args.n, args.m))
            )
    finally:
        plain.stop()
        tls.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nGET /ga4gh/tes/v1/tasks/{{id}}: {args.n} keep-alive, {args.m} on new connections\n")
    print(f"{'transport':<11} {'req/s':>8} {'server CPU/req':>15} {'new-conn req/s':>15}")
    for name, rate, cpu, fresh in rows:
        print(f"{name:<11} {rate:>8.0f} {ms(cpu):>15} {fresh:>15.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
