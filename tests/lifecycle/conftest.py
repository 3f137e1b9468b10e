"""One gateway for the lifecycle tests on the local backend, with small lifecycle limits."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.support import api_client, tes_client

LIMITS = {
    "JOBGATE_MAX_RETRIES": "3",
    "JOBGATE_RETRY_BACKOFF": "0.2",
    "JOBGATE_MAX_RUNNING_TIMEOUT": "3600",
    "JOBGATE_POLL_INTERVAL": "0.3",
    "JOBGATE_HEARTBEAT_FLUSH_INTERVAL": "0.2",
    # Executors reach the gateway by HTTP with their job token.
    "JOBGATE_EXECUTOR_NETWORK": "true",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("lifecycle") / "data", LIMITS).start()
    yield srv
    srv.stop()


@pytest.fixture()
def api(gateway: Server) -> Iterator[httpx.Client]:
    with api_client(gateway) as client:
        yield client


@pytest.fixture()
def tes(gateway: Server) -> Iterator[httpx.Client]:
    with tes_client(gateway) as client:
        yield client
