"""Fixtures of the container tests; the podman site is in :mod:`tests.containers.servers`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.containers.servers import PodmanSite
from tests.support import tes_client


@pytest.fixture()
def ptes(podman_site: PodmanSite) -> Iterator[httpx.Client]:
    """An HTTP client on the podman server's TES API."""
    with tes_client(podman_site.server, timeout=30) as client:
        yield client
