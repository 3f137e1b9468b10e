"""The plain-process runtime through a real server: unisolated, and it says so.

What its tasks do (container paths under the task root, relative commands) is tested on it
by ``tests/test_contract.py``.
"""

from __future__ import annotations

import httpx

from tests.conftest import Server


def test_process_runtime_is_reported_as_unisolated(process_server: Server) -> None:
    health = httpx.get(process_server.url + "/healthz").json()
    assert health["backends"]["local"]["runtime"] == "process"
    assert health["backends"]["local"]["isolated"] == "false"
    assert "UNISOLATED" in process_server.log()
