"""HTTP inputs (GET, redirects, retries) and outputs (PUT where configured)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tes

from tests.conftest import Server
from tests.staging.conftest import S3, stdout, storage_env, system_logs
from tests.support import pytes_run, pytes_sh, serve_http, uid


class Flaky(http.server.BaseHTTPRequestHandler):
    """Serves /ok-after-N: 503 for the first N requests of a name, then the file; PUTs are
    stored in ``received``."""

    hits: dict[str, int] = {}  # noqa: RUF012 - shared by the handler instances on purpose
    received: dict[str, bytes] = {}  # noqa: RUF012
    lock = threading.Lock()
    in_flight = 0
    most_in_flight = 0

    def do_GET(self) -> None:
        if self.path.startswith("/slow/"):
            self._slow()
            return
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + self.path.removeprefix("/redirect/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        name = self.path.rsplit("/", 1)[-1]
        with self.lock:
            self.hits[name] = self.hits.get(name, 0) + 1
            hits = self.hits[name]
        fails = int(name.rsplit("-", 1)[-1]) if "-ok-after-" in name else 0
        if hits <= fails:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"served {name} on try {hits}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _slow(self) -> None:
        """Holds each request 0.4 s, counting how many are in flight at once."""
        cls = type(self)
        with self.lock:
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
        time.sleep(0.4)
        with self.lock:
            cls.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"s\n")

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        with self.lock:
            self.received[self.path] = self.rfile.read(length)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def flaky() -> Iterator[str]:
    with serve_http(Flaky) as base:
        yield base


@pytest.fixture(scope="module")
def put_server(
    tmp_path_factory: pytest.TempPathFactory, s3: S3, stage_dir: Path, flaky: str
) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("http") / "data",
        storage_env(
            s3,
            stage_dir,
            JOBGATE_STAGING_HTTP_PUT_PREFIXES=f"{flaky}/put/",
            JOBGATE_STAGING_PARALLEL="2",
        ),
    ).start()
    yield srv
    srv.stop()


def test_transient_http_errors_are_retried(client: tes.HTTPClient, flaky: str) -> None:
    name = f"{uid()}-ok-after-2"
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=f"{flaky}/{name}", path="/data/x")],
            executors=[pytes_sh("cat data/x")],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task) == f"served {name} on try 3\n"  # two 503s, then the file


def test_http_gives_up_after_the_configured_attempts(client: tes.HTTPClient, flaky: str) -> None:
    url = f"{flaky}/{uid()}-ok-after-9"
    task = pytes_run(
        client, tes.Task(inputs=[tes.Input(url=url, path="/data/x")], executors=[pytes_sh("true")])
    )
    assert task.state == "SYSTEM_ERROR"
    line = next(ln for ln in system_logs(task).splitlines() if url in ln)
    assert "HTTP 503" in line and "gave up after 3 attempts" in line, line
    assert Flaky.hits[url.rsplit("/", 1)[-1]] == 3


def test_redirects_are_followed(client: tes.HTTPClient, flaky: str) -> None:
    name = f"{uid()}-file"
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=f"{flaky}/redirect/{name}", path="/data/x")],
            executors=[pytes_sh("cat data/x")],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task) == f"served {name} on try 1\n"


def test_http_put_outputs_where_configured(put_server: Server, flaky: str) -> None:
    client = tes.HTTPClient(put_server.url, timeout=30)
    base = uid()
    task = pytes_run(
        client,
        tes.Task(
            outputs=[
                tes.Output(url=f"{flaky}/put/{base}/one.txt", path="/data/one.txt"),
                tes.Output(url=f"{flaky}/put/{base}/dir", path="/data/d", type="DIRECTORY"),
            ],
            executors=[
                pytes_sh("echo one > data/one.txt; mkdir -p data/d && printf 2 > data/d/two")
            ],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert Flaky.received[f"/put/{base}/one.txt"] == b"one\n"
    assert Flaky.received[f"/put/{base}/dir/two"] == b"2"


def test_http_put_elsewhere_is_refused(put_server: Server, flaky: str) -> None:
    client = tes.HTTPClient(put_server.url, timeout=30)
    url = f"{flaky}/not-put/{uid()}.txt"
    task = pytes_run(
        client,
        tes.Task(
            outputs=[tes.Output(url=url, path="/data/o")], executors=[pytes_sh("echo x > data/o")]
        ),
    )
    assert task.state == "SYSTEM_ERROR"
    line = next(ln for ln in system_logs(task).splitlines() if url in ln)
    assert "JOBGATE_STAGING_HTTP_PUT_PREFIXES" in line
    assert f"/not-put/{url.rsplit('/', 1)[-1]}" not in Flaky.received


def _many_slow_inputs(client: tes.HTTPClient, flaky: str) -> int:
    """Run a task with six slow HTTP inputs; how many were fetched at once at most."""
    Flaky.most_in_flight = 0
    base = uid()
    inputs = [tes.Input(url=f"{flaky}/slow/{base}-{i}", path=f"/data/{i}") for i in range(6)]
    task = pytes_run(client, tes.Task(inputs=inputs, executors=[pytes_sh("cat data/*")]))
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task) == "s\n" * 6
    return Flaky.most_in_flight


def test_inputs_are_fetched_in_parallel(client: tes.HTTPClient, flaky: str) -> None:
    assert 2 <= _many_slow_inputs(client, flaky) <= 4  # JOBGATE_STAGING_PARALLEL=4 (default)


def test_parallel_transfers_respect_the_configured_limit(put_server: Server, flaky: str) -> None:
    client = tes.HTTPClient(put_server.url, timeout=30)
    assert _many_slow_inputs(client, flaky) == 2  # JOBGATE_STAGING_PARALLEL=2
