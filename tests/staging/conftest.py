"""Real storage servers on 127.0.0.1 for the staging tests, and servers that use them.

S3 is moto in server mode, FTP is pyftpdlib, HTTP is Python's http.server; each runs in a
thread of the test process on a free port. Every task goes through the real py-tes client.
"""

from __future__ import annotations

import http.server
import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import tes
from moto.server import ThreadedMotoServer

with warnings.catch_warnings():
    # pyftpdlib is built on asyncore/asynchat, deprecated in Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

from tests.conftest import Server, free_port
from tests.support import uid

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FTP_USER, FTP_PASSWORD = "jg", "s3cret"


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: Any

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A moto S3 server with one bucket."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    bucket = f"jg-{uid()}"
    client.create_bucket(Bucket=bucket)
    yield S3(endpoint, bucket, client)
    server.stop()


@dataclass
class Ftp:
    port: int
    root: Path

    def url(self, path: str, *, creds: bool = True) -> str:
        auth = f"{FTP_USER}:{FTP_PASSWORD}@" if creds else ""
        return f"ftp://{auth}127.0.0.1:{self.port}/{path}"


@pytest.fixture(scope="session")
def ftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ftp]:
    """A pyftpdlib server with one read-write user, rooted at a temporary directory."""
    root = tmp_path_factory.mktemp("ftproot")
    auth = DummyAuthorizer()
    auth.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elradfmwMT")

    class Handler(FTPHandler):
        authorizer = auth
        auth_failed_timeout = 0.1  # pyftpdlib waits 3 s after a failed login by default

    logging.getLogger("pyftpdlib").setLevel(logging.ERROR)
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    yield Ftp(port, root)
    server.close_all()
    thread.join(5)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def storage_env(s3: S3, allowed_dir: Path, **extra: str | None) -> dict[str, str | None]:
    return {
        "JOBGATE_ALLOWED_DIRS": str(allowed_dir),
        "JOBGATE_S3_ENDPOINT_URL": s3.endpoint,
        **AWS_ENV,
        **extra,
    }


@pytest.fixture(scope="session")
def stage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The allowed directory of the staging servers."""
    return tmp_path_factory.mktemp("stage-allowed")


@pytest.fixture(scope="session")
def stage_server(
    tmp_path_factory: pytest.TempPathFactory, s3: S3, stage_dir: Path
) -> Iterator[Server]:
    """A server that reaches the test stores (127.0.0.1 allow-listed, as an operator
    would list their own MinIO or FTP host)."""
    srv = Server(tmp_path_factory.mktemp("stage") / "data", storage_env(s3, stage_dir)).start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(stage_server: Server) -> tes.HTTPClient:
    return tes.HTTPClient(stage_server.url, timeout=30)


def system_logs(task: tes.Task) -> str:
    return "\n".join(line for tl in task.logs or [] for line in tl.system_logs or [])


def stdout(task: tes.Task) -> str:
    return "".join(el.stdout or "" for tl in task.logs or [] for el in tl.logs or [])


def outputs_log(task: tes.Task) -> list[tuple[str, str, str]]:
    """``logs.outputs`` as sorted (path, url, size_bytes); py-tes parses the size to int."""
    return sorted(
        (o.path, o.url, str(o.size_bytes)) for tl in task.logs or [] for o in tl.outputs or []
    )
