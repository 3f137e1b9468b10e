"""``jobgate serve --config FILE``: several named backends (local + two Slurm ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jobgate.backends import config_file
from tests.conftest import Server, wait_final
from tests.slurm.cluster import SlurmCluster

YAML = """\
default_backend: hpc
backends:
  local: {{type: local, slots: 2}}
  hpc:
    type: slurm
    shared_dir: {shared}/hpc
    slurm_conf: {conf}
  hpc-tiny:
    type: slurm
    shared_dir: {shared}/tiny
    slurm_conf: {conf}
    partition: tiny
    submit_rate: 5
"""

TOML = """\
default_backend = "b"

[backends.a]
type = "local"

[backends.b]
type = "slurm"
shared_dir = "/shared/b"
partition = "batch"
time = "1-00:00:00"
"""


def test_toml_and_yaml_declare_the_same_shape(tmp_path: Path) -> None:
    path = tmp_path / "backends.toml"
    path.write_text(TOML)
    parsed = config_file.load(path)
    assert parsed.default_backend == "b"
    b = parsed.backends["b"]
    assert isinstance(b, config_file.SlurmEntry)
    assert (b.shared_dir, b.partition, b.time) == (Path("/shared/b"), "batch", "1-00:00:00")
    assert isinstance(parsed.backends["a"], config_file.LocalEntry)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("backends: {}\n", "backends"),
        ("backends: {x: {type: pbs}}\n", "type"),
        ("backends: {x: {type: slurm}}\n", "shared_dir"),
        ("default_backend: y\nbackends: {x: {type: local}}\n", "not among"),
        ("backends: {x: {type: local, colour: red}}\n", "colour"),
        ("backends: [", "cannot read"),
    ],
)
def test_bad_config_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(config_file.ConfigFileError, match=needle):
        config_file.load(path)


def test_serve_refuses_an_invalid_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("backends: {x: {type: slurm}}\n")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobgate",
            "serve",
            "--config",
            str(path),
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "shared_dir" in res.stderr + res.stdout


def test_named_backends_route_jobs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    cfg = tmp_path / "backends.yaml"
    cfg.write_text(YAML.format(shared=tmp_path / "shared", conf=slurm_cluster.conf))
    srv = Server(tmp_path / "data", {"JOBGATE_CONFIG_FILE": str(cfg)}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            health = http.get("/healthz").json()
            assert set(health["backends"]) == {"local", "hpc", "hpc-tiny"}
            tes = "/ga4gh/tes/v1"
            task = {"executors": [{"image": "x", "command": ["echo", "hi"]}]}
            default = http.post(f"{tes}/tasks", json=task).json()["id"]
            by_zone = http.post(
                f"{tes}/tasks", json={**task, "resources": {"zones": ["local"]}}
            ).json()["id"]
            by_param = http.post(
                f"{tes}/tasks",
                json={**task, "resources": {"backend_parameters": {"backend": "hpc-tiny"}}},
            ).json()["id"]
            native = http.post("/api/v1/jobs", json={"script": "echo n", "backend": "local"})
            assert native.status_code == 201, native.text
        with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as client:
            done = {j: wait_final(client, j, timeout=60) for j in (default, by_zone, by_param)}
        backends = {j: t["logs"][0]["metadata"]["backend"] for j, t in done.items()}
        assert backends == {default: "hpc", by_zone: "local", by_param: "hpc-tiny"}
        failed = {
            j: t["logs"][-1].get("system_logs") for j, t in done.items() if t["state"] != "COMPLETE"
        }
        assert not failed, failed
        assert (tmp_path / "shared" / "tiny" / "jobs").is_dir()
        assert done[by_param]["logs"][0]["metadata"]["slurm_partition"] == "tiny"
        assert done[default]["logs"][0]["metadata"]["slurm_partition"] == "debug"
    finally:
        srv.stop()
