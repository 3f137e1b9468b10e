"""Fixtures of the Grid Engine tests; the cluster and its server are in
:mod:`tests.gridengine.servers`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.support import tes_client


@pytest.fixture()
def gridengine_tes(gridengine_server: Server) -> Iterator[httpx.Client]:
    with tes_client(gridengine_server, timeout=30) as client:
        yield client
