"""The container image: built with podman from a Debian root made offline, started, healthy,
running a task in a bubblewrap sandbox inside the container as its non-root user.

Slow on a fresh machine (debootstrap, then pip wheels: both cached for reruns, see
``tests/image/base.py``); the image and container names are unique to each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.image.base import POSTGRES_PACKAGES, ensure_image, podman, skip_reason
from tests.image.build import REPO, build_context, build_image
from tests.support import wait_until

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

SERVICE_UID = 10001
# bwrap mounts a fresh /proc for each task's PID namespace; the kernel refuses that while
# the container's /proc has podman's masking mounts on it, so these are unmasked.
RUN_OPTIONS = ("--security-opt", "unmask=/proc/*")


@dataclass
class Running:
    ref: str
    name: str
    url: str
    data: Path
    timings: dict[str, float]

    def token(self) -> str:
        return (self.data / "admin-token").read_text().strip()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, float]]]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    base = ensure_image()
    timings["base image"] = time.monotonic() - started
    started = time.monotonic()
    context = build_context(tmp_path_factory.mktemp("image-context"))
    timings["wheels"] = time.monotonic() - started
    ref = f"localhost/jobgate-test-image-{uuid.uuid4().hex[:8]}:latest"
    started = time.monotonic()
    build_image(context, base, ref)
    timings["podman build"] = time.monotonic() - started
    yield ref, timings
    _rmi(ref)


def _rmi(ref: str) -> None:
    with contextlib.suppress(Exception):
        podman("rmi", "--force", ref)


@pytest.fixture(scope="module")
def running(
    image: tuple[str, dict[str, float]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    ref, timings = image
    data = tmp_path_factory.mktemp("image-data")
    os.chown(data, SERVICE_UID, SERVICE_UID)  # the volume belongs to the service user
    port = free_port()
    name = f"jobgate-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",  # the test reaches it on 127.0.0.1 (no port mapping needed)
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        *RUN_OPTIONS,
        "-e",
        "JOBGATE_HOST=127.0.0.1",
        "-e",
        f"JOBGATE_PORT={port}",
        "-v",
        f"{data}:/var/lib/jobgate",
        ref,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            return False

        wait_until(healthy, 60, "the container to answer /healthz")
        timings["start to /healthz"] = time.monotonic() - started
        yield Running(ref, name, url, data, timings)
    finally:
        logs = podman("logs", name, check=False)
        print(f"container log:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        podman("rm", "--force", name, check=False)
        print("image timings (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}))


def test_the_image_runs_as_a_user_with_a_volume_and_a_health_check(
    image: tuple[str, dict[str, float]],
) -> None:
    ref, _ = image
    info = json.loads(podman("image", "inspect", ref).stdout)[0]
    config = info["Config"]
    assert config["User"] == "jobgate"
    assert "/var/lib/jobgate" in config["Volumes"]
    # podman shows the health check at the top level, docker under Config.
    check = info.get("Healthcheck") or config.get("Healthcheck")
    assert check is not None, info
    assert "/healthz" in " ".join(check["Test"])
    assert config["Entrypoint"] == ["jobgate"]


def test_the_container_serves_and_reports_healthy(running: Running) -> None:
    body = httpx.get(running.url + "/healthz").json()
    assert body["status"] == "ok"
    assert body["backends"]["local"]["runtime"] == "bwrap"
    assert podman("healthcheck", "run", running.name, check=False).returncode == 0
    uid = podman("exec", running.name, "id", "-u").stdout.strip()
    assert uid == str(SERVICE_UID)
    # The database and the admin token are in the volume, owned by the service user.
    assert (running.data / "jobgate.db").stat().st_uid == SERVICE_UID
    assert running.token()


def test_a_task_runs_in_a_bubblewrap_sandbox_inside_the_container(running: Running) -> None:
    headers = {"Authorization": f"Bearer {running.token()}"}
    script = (
        "echo uid=$(id -u); "
        "test -e /var/lib/jobgate/admin-token && echo token-visible; "
        "test -e /opt/jobgate && echo venv-visible; "
        "echo pid1=$(cat /proc/1/comm)"
    )
    task = {"executors": [{"image": "debian", "command": ["sh", "-c", script]}]}
    with httpx.Client(base_url=running.url, headers=headers, timeout=30) as c:
        r = c.post("/ga4gh/tes/v1/tasks", json=task)
        assert r.status_code == 200, r.text
        task_id = r.json()["id"]
        done: dict[str, object] = {}

        def final() -> bool:
            nonlocal done
            done = c.get(f"/ga4gh/tes/v1/tasks/{task_id}", params={"view": "FULL"}).json()
            return done["state"] in {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}

        wait_until(final, 60, "the task to finish")
    assert done["state"] == "COMPLETE", done
    stdout = done["logs"][-1]["logs"][0]["stdout"]  # type: ignore[index]
    assert f"uid={SERVICE_UID}" in stdout
    # Its own PID namespace and a root of read-only binds: no service files in sight.
    assert "token-visible" not in stdout and "venv-visible" not in stdout
    assert "pid1=bwrap" in stdout or "pid1=sh" in stdout


# -- compose: jobgate + PostgreSQL -------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("podman-compose") is None:
        pytest.skip("podman-compose is not installed (make system-deps installs it)")
    base = ensure_image(POSTGRES_PACKAGES)
    ref = f"localhost/jobgate-test-postgres-{uuid.uuid4().hex[:8]}:latest"
    podman(
        "build",
        # No layer cache: looking it up walks every image in the store, and fails when
        # another test process removes one meanwhile ("layer not known").
        "--layers=false",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--build-arg",
        f"BASE={base}",
        "-t",
        ref,
        str(REPO / "tests" / "image" / "postgres"),
    )
    yield ref
    _rmi(ref)


def test_compose_starts_jobgate_on_postgresql_and_runs_a_task(
    image: tuple[str, dict[str, float]], postgres_image: str, tmp_path: Path
) -> None:
    ref, timings = image
    project = f"jobgate-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "runc"\n')  # crun fails on this machine's cgroups
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(conf),
        "JOBGATE_IMAGE": ref,
        "JOBGATE_POSTGRES_IMAGE": postgres_image,
        "JOBGATE_PORT": str(port),
        "JOBGATE_DB_PASSWORD": uuid.uuid4().hex,
    }
    compose = ["podman-compose", "-p", project, "-f", str(REPO / "compose.yaml")]
    started = time.monotonic()
    up = subprocess.run([*compose, "up", "-d"], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            return False

        wait_until(healthy, 120, "jobgate under compose to answer /healthz")
        timings["compose up to /healthz"] = time.monotonic() - started
        service = f"{project}_jobgate_1"
        token = podman("exec", service, "cat", "/var/lib/jobgate/admin-token").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        task = {"executors": [{"image": "debian", "command": ["echo", "from compose"]}]}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            task_id = c.post("/ga4gh/tes/v1/tasks", json=task).json()["id"]
            wait_until(
                lambda: c.get(f"/ga4gh/tes/v1/tasks/{task_id}").json()["state"] == "COMPLETE",
                60,
                "the task to complete",
            )
        # The job is in PostgreSQL (migrated at start), not in an SQLite file.
        sql = f"SELECT state FROM jobs WHERE id = '{task_id}'"
        row = podman(
            "exec",
            f"{project}_db_1",
            "psql",
            "-h",
            "/tmp",
            "-U",
            "jobgate",
            "-d",
            "jobgate",
            "-tAc",
            sql,
        ).stdout.strip()
        assert row == "COMPLETE"
        assert (
            podman(
                "exec", service, "test", "-e", "/var/lib/jobgate/jobgate.db", check=False
            ).returncode
            != 0
        )
    finally:
        subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, text=True)
