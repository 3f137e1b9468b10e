"""Fixtures of the Slurm tests; the cluster and its server are in :mod:`tests.slurm.servers`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.support import tes_client


@pytest.fixture()
def slurm_tes(slurm_server: Server) -> Iterator[httpx.Client]:
    with tes_client(slurm_server, timeout=30) as client:
        yield client
