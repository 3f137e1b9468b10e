"""Pulsar fetching inputs itself (remote staging), the INITIALIZING state it shows while it
does, over REST and over the message queue; and executors' images handed to a container
runtime on the Pulsar host.

The inputs come from an HTTP server on 127.0.0.1 that holds each answer until the test
releases it, so the task is caught while Pulsar stages it. Who fetched is told by the
User-Agent: Pulsar fetches with python-requests, the gateway with httpx.
"""

from __future__ import annotations

import http.server
import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.pulsar.pulsarserver import AMQP_URL, PulsarServer
from tests.pulsar.servers import pulsar_config, pulsar_entry
from tests.support import (
    create,
    serve_http,
    sh,
    stdouts,
    system_logs,
    tes_client,
    uid,
    wait_final,
    wait_state,
    wait_until,
)

BODY = b"fetched by pulsar\n"
IMAGE = "quay.io/biocontainers/samtools:1.17"


class SlowInputs:
    """Serves ``BODY`` at ``/slow/<key>`` once the test releases ``key``; records the
    User-Agent of every request per key."""

    def __init__(self) -> None:
        self.url = ""
        self.port = 0
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.agents: dict[str, list[str]] = {}

    def gate(self, key: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(key, threading.Event())

    def release(self, key: str) -> None:
        self.gate(key).set()

    def input(self, key: str, path: str = "/data/in.txt") -> dict[str, str]:
        return {"url": f"{self.url}/slow/{key}", "path": path}

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        inputs = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                key = self.path.rsplit("/", 1)[-1]
                with inputs._lock:
                    inputs.agents.setdefault(key, []).append(self.headers.get("User-Agent", ""))
                inputs.gate(key).wait(60)
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def slow() -> Iterator[SlowInputs]:
    inputs = SlowInputs()
    with serve_http(inputs.handler(), quiet_errors=True) as url:
        inputs.url = url
        inputs.port = int(url.rsplit(":", 1)[1])
        yield inputs
        for gate in list(inputs._gates.values()):
            gate.set()  # no handler thread outlives the module


def shim(path: Path) -> Path:
    """A stand-in for ``docker`` on the Pulsar host: it writes its argv (one JSON list) to
    the file next to it and prints what the command would have."""
    path.write_text(
        "#!/bin/sh\n"
        f"python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \"$@\" > {path}.argv\n"
        "echo in-the-container\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def gateway_env(base: Path, config: Path, allowed: Path, slow: SlowInputs) -> dict[str, str]:
    return {
        "JOBGATE_CONFIG_FILE": str(config),
        "JOBGATE_ALLOWED_DIRS": str(allowed),
        "JOBGATE_POLL_INTERVAL": "0.2",
        "JOBGATE_STAGING_ALLOWED_HOSTS": f"127.0.0.1:{slow.port}",
    }


@pytest.fixture(scope="module")
def docker_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shim(tmp_path_factory.mktemp("shim") / "docker")


@pytest.fixture(scope="module")
def remote_server(
    pulsar: PulsarServer,
    slow: SlowInputs,
    docker_shim: Path,
    tmp_path_factory: pytest.TempPathFactory,
    allowed_dir: Path,
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("remotegw")
    backends = {
        "rs": pulsar_entry(pulsar, remote_staging=True),
        "ctr": pulsar_entry(pulsar, container="docker", container_command=str(docker_shim)),
    }
    config = pulsar_config(base / "backends.yml", backends, "rs")
    srv = Server(base / "data", gateway_env(base, config, allowed_dir, slow)).start(timeout=60)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def amqp_remote_server(
    amqp_pulsar: PulsarServer,
    slow: SlowInputs,
    tmp_path_factory: pytest.TempPathFactory,
    allowed_dir: Path,
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("amqpremotegw")
    entry = pulsar_entry(
        amqp_pulsar, amqp_url=AMQP_URL, manager=amqp_pulsar.managers[0], remote_staging=True
    )
    config = pulsar_config(base / "backends.yml", {"rs": entry}, "rs")
    env = {**gateway_env(base, config, allowed_dir, slow), "JOBGATE_POLL_INTERVAL": "5"}
    srv = Server(base / "data", env).start(timeout=60)
    yield srv
    srv.stop()


def reading_task(slow: SlowInputs, key: str) -> dict[str, Any]:
    return {
        "executors": [sh('cat "$JOBGATE_TASK_ROOT/data/in.txt"')],
        "inputs": [slow.input(key)],
    }


@pytest.mark.parametrize("transport", ["rest", "amqp"])
def test_pulsar_fetches_an_input_itself_and_the_task_is_initializing_meanwhile(
    transport: str, request: pytest.FixtureRequest, slow: SlowInputs
) -> None:
    server: Server = request.getfixturevalue(
        "remote_server" if transport == "rest" else "amqp_remote_server"
    )
    key = uid()
    with tes_client(server) as tes:
        task_id = create(tes, reading_task(slow, key))
        wait_until(lambda: key in slow.agents, timeout=30, what="Pulsar asked for the input")

        def staging_at_pulsar() -> bool:
            # INITIALIZING after the submission was recorded (the Pulsar job named), not
            # the gateway's own INITIALIZING before it.
            seen = tes.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
            meta = (seen.get("logs") or [{}])[0].get("metadata", {})
            return bool(seen["state"] == "INITIALIZING" and meta.get("pulsar_job_id"))

        # Held by the input server: the job is Pulsar's, still staging.
        wait_until(staging_at_pulsar, timeout=20, what="INITIALIZING at Pulsar")
        slow.release(key)
        task = wait_final(tes, task_id, timeout=60)
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == [BODY.decode()]
    (agent,) = slow.agents[key]  # one fetch, by Pulsar, none by the gateway
    assert agent.startswith("python-requests"), agent


def test_the_staging_guard_still_decides_what_pulsar_may_fetch(
    remote_server: Server, slow: SlowInputs
) -> None:
    # Another port of 127.0.0.1 is not in JOBGATE_STAGING_ALLOWED_HOSTS: loopback, refused.
    with serve_http(slow.handler()) as other:
        url = f"{other}/slow/{uid()}"
        with tes_client(remote_server) as tes:
            task = wait_final(
                tes,
                create(
                    tes,
                    {
                        "executors": [sh("true")],
                        "inputs": [{"url": url, "path": "/data/x"}],
                    },
                ),
            )
    assert task["state"] == "SYSTEM_ERROR", task
    assert "loopback" in system_logs(task)


def test_a_gateway_killed_while_pulsar_stages_adopts_the_job_and_it_runs_once(
    tmp_path: Path, pulsar: PulsarServer, slow: SlowInputs, allowed_dir: Path
) -> None:
    key = uid()
    count = allowed_dir / uid()
    config = pulsar_config(
        tmp_path / "backends.yml", {"rs": pulsar_entry(pulsar, remote_staging=True)}, "rs"
    )
    srv = Server(tmp_path / "data", gateway_env(tmp_path, config, allowed_dir, slow))
    srv.start(timeout=60)
    try:
        with tes_client(srv) as tes:
            task = reading_task(slow, key)
            task["executors"][0]["command"][-1] += f"; echo run >> {count}"
            task_id = create(tes, task)
            wait_until(lambda: key in slow.agents, timeout=30, what="Pulsar asked for the input")
            wait_until(
                lambda: "logs" in tes.get(f"/tasks/{task_id}", params={"view": "FULL"}).json(),
                timeout=20,
                what="the submission recorded",
            )
        srv.kill9()
        srv.start(timeout=60)
        with tes_client(srv) as tes:
            seen = wait_state(tes, task_id, {"INITIALIZING"})  # adopted as it was
            slow.release(key)
            task = wait_final(tes, task_id, timeout=60)
        assert task["state"] == "COMPLETE", system_logs(task)
        assert count.read_text() == "run\n"
        assert len(slow.agents[key]) == 1  # not submitted again (it would fetch again)
        assert len(task["logs"]) == 1, seen
    finally:
        srv.stop()


def test_with_a_container_runtime_each_executor_runs_in_its_image(
    remote_server: Server, docker_shim: Path
) -> None:
    task_spec = {
        "executors": [sh("echo hi", image=IMAGE, workdir="/work", env={"A": "1"})],
        "inputs": [{"content": "x", "path": "/data/in.txt"}],
        "resources": {"backend_parameters": {"backend": "ctr"}},
    }
    with tes_client(remote_server) as tes:
        task = wait_final(tes, create(tes, task_spec), timeout=60)
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["in-the-container\n"]
    argv = json.loads(Path(f"{docker_shim}.argv").read_text())
    assert argv[:2] == ["run", "--rm"]
    assert IMAGE in argv
    assert argv[-3:] == ["sh", "-c", "echo hi"]
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert any(m.endswith("/root/data/in.txt:/data/in.txt") for m in mounts), mounts
    assert any(m.endswith("/root/work:/work") for m in mounts), mounts
    assert any(m.endswith("/root/tmp:/tmp") for m in mounts), mounts
    assert argv[argv.index("A=1") - 1] == "-e"
    assert argv[argv.index("-w") + 1] == "/work"
    assert "images not used" not in system_logs(task)


def test_without_a_container_runtime_the_images_are_noted(remote_server: Server) -> None:
    with tes_client(remote_server) as tes:
        task = wait_final(tes, create(tes, {"executors": [sh("true", image="ubuntu:24.04")]}))
    assert task["state"] == "COMPLETE", system_logs(task)
    assert "executor images not used (ubuntu:24.04)" in system_logs(task)
