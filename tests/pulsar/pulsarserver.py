"""A real Galaxy Pulsar server for the tests, from its own venv (``make pulsar-venv``).

Pulsar's dependencies (galaxy-*, webob, kombu) stay out of jobgate's venv: the gateway
talks to it over HTTP and AMQP only, as it would to a remote site.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("JOBGATE_TEST_PULSAR_VENV", REPO / ".venv-pulsar"))
AMQP_URL = os.environ.get("JOBGATE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def unavailable() -> str | None:
    """Why a Pulsar server cannot start here, or None."""
    if not (VENV / "bin" / "pulsar-serve").exists():
        return f"no Pulsar venv at {VENV} (make pulsar-venv)"
    return None


def rabbitmq_unavailable() -> str | None:
    """Why the message-queue tests cannot run: RabbitMQ is not listening (and could not be
    started)."""
    if _listening(5672):
        return None
    if shutil.which("rabbitmq-server") is None:
        return "RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed"
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _listening(5672):
            time.sleep(2)  # the port opens a little before the broker accepts logins
            return None
        time.sleep(0.5)
    return "RabbitMQ did not start (rabbitmq-server -detached)"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PulsarServer:
    """``pulsar-serve`` in ``base`` with ``queued_python`` managers (``_default_`` and
    ``other`` unless told), listening on a free port."""

    def __init__(
        self,
        base: Path,
        *,
        token: str = "s3cret",
        amqp_url: str | None = None,
        concurrent: int = 4,
        managers: tuple[str, ...] = ("_default_", "other"),
    ) -> None:
        self.base = base
        self.token = token
        self.amqp_url = amqp_url
        self.concurrent = concurrent
        self.managers = managers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / "pulsar.log"

    def configure(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        bin_ = VENV / "bin"
        subprocess.run(
            [
                str(bin_ / "pulsar-config"),
                "--directory",
                str(self.base),
                "--port",
                str(self.port),
                "--private_token",
                self.token,
                "--host",
                "127.0.0.1",
                "--force",
            ],
            check=True,
            capture_output=True,
        )
        lines = [
            f"staging_directory: {self.base}/files/staging",
            f"persistence_directory: {self.base}/files/persisted_data",
            "managers:",
        ]
        for manager in self.managers:
            lines += [
                f"  {manager}:",
                "    type: queued_python",
                f"    num_concurrent_jobs: {self.concurrent}",
            ]
        if self.amqp_url:
            lines.append(f"message_queue_url: {self.amqp_url}")
        with (self.base / "app.yml").open("a") as f:
            f.write("\n" + "\n".join(lines) + "\n")
        ini = self.base / "server.ini"
        # Its default logs every request at DEBUG: slow, and the log is what we read on failure.
        ini.write_text(ini.read_text().replace("level = DEBUG", "level = INFO"))

    def start(self, timeout: float = 60) -> PulsarServer:
        if not (self.base / "server.ini").exists():
            self.configure()
        (self.base / "home").mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(self.base / "home")}
        for key in [k for k in env if k.startswith("JOBGATE_")]:
            del env[key]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(VENV / "bin" / "pulsar-serve"), "server.ini"],
            cwd=self.base,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulsar exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(
                    f"{self.url}/managers/{self.managers[0]}/healthz",
                    params={"private_token": self.token},
                )
                if r.status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"pulsar did not answer: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """Stop it hard (SIGKILL to its process group), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
