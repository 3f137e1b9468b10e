"""How each container runtime turns an executor into a command line (no engine runs).

Docker and Apptainer cannot run on these machines (no Docker engine, no Apptainer
package): these tests pin the command lines the README's manual check runs for real.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobgate.config import Settings
from jobgate.domain.models import Job, now
from jobgate.runner.taskdir import TaskDir, container_paths
from jobgate.runtimes.apptainer import ApptainerRuntime
from jobgate.runtimes.base import ExecSpec, RuntimeFailure, UnsupportedTask
from jobgate.runtimes.choice import make_runtime
from jobgate.runtimes.images import ImageCatalog, archive_stems, qualify
from jobgate.runtimes.oci import DockerRuntime, PodmanRuntime, default_ulimits


def _spec(root: Path, **extra: object) -> ExecSpec:
    fields: dict[str, object] = {
        "argv": ["sh", "-c", "echo $X > out"],
        "image": "alpine",
        "root": root,
        "mounts": [],
        "env": {"X": "a b"},
        "workdir": "/data",
        "cpu_cores": 2,
        "ram_bytes": 512 * 1024**2,
        "name": "jobgate-t1-0",
        "paths": ("/data", "/ref/genome.fa"),
    }
    fields.update(extra)
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "ref").mkdir(exist_ok=True)
    (root / "ref" / "genome.fa").write_text(">x\n")
    return ExecSpec(**fields)  # type: ignore[arg-type]


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_docker_command_line(tmp_path: Path) -> None:
    rt = DockerRuntime(
        "/usr/bin/docker",
        catalog=ImageCatalog({"alpine": "registry.local/alpine:3.19"}),
        instance="inst1",
        user="1000:1000",
        ulimits=["nofile=1024:1024"],
    )
    root = tmp_path / "root"
    argv = rt.command(_spec(root)).argv
    assert argv[:4] == ["/usr/bin/docker", "run", "--name", "jobgate-t1-0"]
    assert _pairs(argv, "--label") == ["org.jobgate.instance=inst1"]
    assert _pairs(argv, "--network") == ["none"]
    assert _pairs(argv, "--user") == ["1000:1000"]
    assert _pairs(argv, "--memory") == [f"{512 * 1024**2}b"]
    assert _pairs(argv, "--memory-swap") == [f"{512 * 1024**2}b"]  # no swap beyond it
    assert _pairs(argv, "--cpus") == ["2"]
    assert _pairs(argv, "--ulimit") == ["nofile=1024:1024"]
    assert _pairs(argv, "--pull") == ["never"]  # pulled beforehand, failures reported
    assert sorted(_pairs(argv, "--volume")) == [
        f"{root}/data:/data",
        f"{root}/ref/genome.fa:/ref/genome.fa",
        f"{root}/tmp:/tmp",
    ]
    assert _pairs(argv, "--workdir") == ["/data"]
    assert _pairs(argv, "--env") == ["X=a b"]
    # The argv is the entrypoint as a whole, no shell, and the mapped image comes last.
    assert json.loads(_pairs(argv, "--entrypoint")[0]) == ["sh", "-c", "echo $X > out"]
    assert argv[-1] == "registry.local/alpine:3.19"
    assert "--replace" not in argv  # docker has no such flag
    assert "--rm" not in argv  # docker's daemon would remove it after the client exits


def test_podman_command_line(tmp_path: Path) -> None:
    rt = PodmanRuntime(
        "/usr/bin/podman", oci_runtime="/usr/sbin/runc", network=True, user="", instance="i"
    )
    argv = rt.command(_spec(tmp_path / "root", workdir=None, ram_bytes=None)).argv
    assert argv[:4] == ["/usr/bin/podman", "--runtime", "/usr/sbin/runc", "run"]
    assert "--replace" in argv  # a retried task reuses its container name
    assert "--rm" in argv  # no memory limit: no OOM state to read after the exit
    limited = rt.command(_spec(tmp_path / "root", ram_bytes=10**8)).argv
    assert "--rm" not in limited  # the container outlives its exit until it is inspected
    assert "--network" not in argv and "--user" not in argv
    assert "--memory" not in argv and "--workdir" not in argv
    assert argv[-1] == "docker.io/library/alpine"  # podman needs qualified names


def test_podman_runs_an_unpacked_root_under_an_overlay(tmp_path: Path) -> None:
    rt = PodmanRuntime("/usr/bin/podman", catalog=ImageCatalog({"alpine": f"dir:{tmp_path}"}))
    argv = rt.command(_spec(tmp_path / "root")).argv
    assert argv[-2:] == ["--rootfs", f"{tmp_path}:O"]


def test_docker_refuses_an_unpacked_root(tmp_path: Path) -> None:
    rt = DockerRuntime("/usr/bin/docker", catalog=ImageCatalog({"alpine": f"dir:{tmp_path}"}))
    with pytest.raises(UnsupportedTask, match="unpacked root"):
        rt.command(_spec(tmp_path / "root"))


@pytest.mark.parametrize("path", ["/proc/x", "/sys", "/dev/shm/a", "/a:b"])
def test_container_paths_the_engine_owns_are_refused(tmp_path: Path, path: str) -> None:
    rt = DockerRuntime("/usr/bin/docker")
    with pytest.raises(UnsupportedTask, match="container"):
        rt.command(_spec(tmp_path / "root", paths=(path,)))


def test_default_ulimits_stay_within_this_services_limits() -> None:
    import resource

    values = dict(u.split("=") for u in default_ulimits())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        assert values["nofile"] == f"{soft}:{hard}"
    nproc = int(values["nproc"].split(":")[0])
    proc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    assert nproc <= 4096 and (proc_hard == resource.RLIM_INFINITY or nproc <= proc_hard)


def test_apptainer_command_line(tmp_path: Path) -> None:
    sif = tmp_path / "images" / "alpine.sif"
    sif.parent.mkdir()
    sif.write_bytes(b"SIF")
    rt = ApptainerRuntime(
        "/usr/bin/apptainer",
        catalog=ImageCatalog(image_dir=sif.parent),
        cache_dir=tmp_path / "cache",
        user="",
    )
    root = tmp_path / "root"
    spec = _spec(root)
    rt.prepare(spec)  # the archive is there: nothing to pull
    argv = rt.command(spec).argv
    assert argv[:4] == ["/usr/bin/apptainer", "exec", "--containall", "--no-home"]
    assert argv[4:7] == ["--net", "--network", "none"]
    assert sorted(_pairs(argv, "--bind")) == [
        f"{root}/data:/data",
        f"{root}/ref/genome.fa:/ref/genome.fa",
        f"{root}/tmp:/tmp",
    ]
    assert _pairs(argv, "--pwd") == ["/data"]
    assert _pairs(argv, "--env") == ["X=a b"]
    assert argv[-4:] == [str(sif), "sh", "-c", "echo $X > out"]
    # Limits are the runner's cgroups: apptainer's processes stay in them.
    assert not rt.limits_itself and "--memory" not in argv


def test_apptainer_pulls_registry_images_into_its_cache(tmp_path: Path) -> None:
    rt = ApptainerRuntime("/usr/bin/apptainer", cache_dir=tmp_path / "cache")
    argv = rt.command(_spec(tmp_path / "root", image="ubuntu:22.04")).argv
    assert argv[argv.index("--env") + 2] == str(tmp_path / "cache" / "ubuntu_22.04.sif")


def test_apptainer_mapped_path_that_is_missing_is_a_runtime_failure(tmp_path: Path) -> None:
    rt = ApptainerRuntime(
        "/usr/bin/apptainer",
        catalog=ImageCatalog({"alpine": "/nowhere/alpine.sif"}),
        cache_dir=tmp_path,
    )
    with pytest.raises(RuntimeFailure, match=r"/nowhere/alpine\.sif"):
        rt.prepare(_spec(tmp_path / "root"))


def test_singularity_is_an_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "singularity"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    rt = make_runtime(Settings(runtime="singularity", data_dir=tmp_path / "data"))
    assert isinstance(rt, ApptainerRuntime)
    assert rt.describe()["executable"] == "singularity"


def test_an_engine_that_is_not_installed_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="docker"):
        make_runtime(Settings(runtime="docker", data_dir=tmp_path))


# -- images and settings --------------------------------------------------------------


def test_image_map_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBGATE_IMAGE_MAP", "alpine=localhost/busybox:latest, ub = dir:/srv/ub")
    monkeypatch.setenv("JOBGATE_CONTAINER_ULIMITS", "nofile=64:64,nproc=32:32")
    s = Settings()
    assert s.image_map == {"alpine": "localhost/busybox:latest", "ub": "dir:/srv/ub"}
    assert s.container_ulimits == ("nofile=64:64", "nproc=32:32")
    source = ImageCatalog(s.image_map).resolve("ub")
    assert source.rootfs == Path("/srv/ub")


@pytest.mark.parametrize("value", ["alpine", "=img", "alpine=", "a=dir:"])
def test_bad_image_map_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("JOBGATE_IMAGE_MAP", value)
    with pytest.raises(ValidationError, match="image"):
        Settings()


def test_archive_names_and_qualified_references(tmp_path: Path) -> None:
    assert archive_stems("alpine") == ["alpine", "alpine_latest"]
    assert archive_stems("localhost/bb:latest") == ["localhost_bb_latest", "localhost_bb"]
    assert qualify("alpine") == "docker.io/library/alpine"
    assert qualify("biocontainers/samtools:1.9") == "docker.io/biocontainers/samtools:1.9"
    assert qualify("quay.io/x/y") == "quay.io/x/y"
    assert qualify("localhost/bb") == "localhost/bb"
    assert qualify("registry:5000/bb") == "registry:5000/bb"
    (tmp_path / "alpine_latest.tar").write_bytes(b"")
    catalog = ImageCatalog({}, tmp_path)
    assert catalog.archive(catalog.resolve("alpine:latest"), [".tar"]) == (
        tmp_path / "alpine_latest.tar"
    )
    assert catalog.archive(catalog.resolve("ubuntu"), [".tar"]) is None


def test_container_paths_cover_what_the_task_names_once(tmp_path: Path) -> None:
    job = Job.model_validate(
        {
            "id": str(uuid.uuid4()),
            "creation_time": now(),
            "inputs": [
                {"path": "/data/in/a.txt", "content": "a"},
                {"path": "/ref/genome.fa", "content": ">"},
            ],
            "outputs": [
                {"path": "/data/out/*.txt", "path_prefix": "/data/out", "url": "file:///x/"}
            ],
            "volumes": ["/data"],
            "executors": [{"image": "alpine", "command": ["true"], "workdir": "/work/dir"}],
        }
    )
    assert container_paths(job) == ("/data", "/ref/genome.fa", "/work/dir")
    td = TaskDir(tmp_path / "t")
    td.prepare(job)
    assert all(os.path.isdir(td.root / p.lstrip("/")) for p in ("/data", "/work/dir"))
