"""Fixtures of the batch tests: fake Slurm commands, and the in-process gateway of the
dispatcher tests (a real SQLite store and the real dispatcher)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.batch.fakesched import FakeSlurm
from tests.dispatcher.conftest import gateway as gateway


@pytest.fixture()
def fake(tmp_path: Path) -> FakeSlurm:
    return FakeSlurm(tmp_path / "fakeslurm")
