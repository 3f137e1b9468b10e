"""What environment Grid Engine's client commands get from the backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobgate.backends.gridengine.backend import gridengine_commands


def test_only_the_cell_and_basic_variables_reach_the_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SGE_ROOT", "/opt/sge")
    monkeypatch.setenv("SGE_QMASTER_PORT", "6444")
    # A gateway running inside a Grid Engine job, with secrets in its settings.
    for name, value in {
        "JOB_ID": "7",
        "SGE_TASK_ID": "3",
        "SGE_O_WORKDIR": "/home/x",
        "SGE_STDOUT_PATH": "/home/x/out",
        "JOBGATE_S3_SECRET_KEY": "secret",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }.items():
        monkeypatch.setenv(name, value)
    env = gridengine_commands().env
    assert env["SGE_ROOT"] == "/opt/sge" and env["SGE_QMASTER_PORT"] == "6444"
    assert "PATH" in env
    for name in ("JOB_ID", "SGE_TASK_ID", "SGE_O_WORKDIR", "SGE_STDOUT_PATH"):
        assert name not in env
    assert "JOBGATE_S3_SECRET_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    other = gridengine_commands("/var/lib/gridengine", "cell2").env
    assert (other["SGE_ROOT"], other["SGE_CELL"]) == ("/var/lib/gridengine", "cell2")


def test_a_cell_that_does_not_exist_fails_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "sge" / "default" / "common").mkdir(parents=True)
    config = tmp_path / "backends.yaml"
    config.write_text(
        f"backends:\n  ge:\n    type: gridengine\n    shared_dir: {tmp_path}/shared\n"
        f"    sge_root: {tmp_path}/sge\n    sge_cell: cell9\n"
    )
    argv = [sys.executable, "-m", "jobgate", "serve", "--config", str(config)]
    argv += ["--data-dir", str(tmp_path / "data"), "--port", "1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())
    assert f"backend 'ge': no Grid Engine cell 'cell9' under SGE_ROOT {tmp_path}/sge" in said
