"""The session's Pulsar servers and a jobgate server whose default backend is one of them.

A pytest plugin (loaded by ``tests/conftest.py``, as a site of :mod:`tests.sites`): the
contract suite and the Pulsar tests share one Pulsar server and one jobgate server; they
start when a test first asks (~2 s).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import Server
from tests.pulsar.pulsarserver import AMQP_URL, PulsarServer, rabbitmq_unavailable, unavailable


def pulsar_config(path: Path, backends: dict[str, dict[str, object]], default: str) -> Path:
    """A jobgate config file with a ``local`` backend and ``backends``."""
    doc = {"default_backend": default, "backends": {"local": {"type": "local"}, **backends}}
    path.write_text(yaml.safe_dump(doc))
    return path


def pulsar_entry(pulsar: PulsarServer, **extra: object) -> dict[str, object]:
    return {"type": "pulsar", "url": pulsar.url, "private_token": pulsar.token, **extra}


@pytest.fixture(scope="session")
def pulsar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulsarServer]:
    """A Pulsar server (REST) for the session; skips when Pulsar is not installed."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    srv = PulsarServer(tmp_path_factory.mktemp("pulsar")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pulsar_server(
    pulsar: PulsarServer, tmp_path_factory: pytest.TempPathFactory, allowed_dir: Path
) -> Iterator[Server]:
    """One jobgate server for the session, sending tasks to :func:`pulsar` by default."""
    base = tmp_path_factory.mktemp("pulsarsrv")
    config = pulsar_config(base / "backends.yml", {"pulsar": pulsar_entry(pulsar)}, "pulsar")
    env = {
        "JOBGATE_CONFIG_FILE": str(config),
        "JOBGATE_ALLOWED_DIRS": str(allowed_dir),
        "JOBGATE_POLL_INTERVAL": "0.2",
    }
    srv = Server(base / "data", env).start(timeout=60)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def amqp_pulsar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulsarServer]:
    """A Pulsar server listening on RabbitMQ; its manager's name is unique, so that its
    queues (named after the manager) are its own on the shared broker."""
    reason = unavailable() or rabbitmq_unavailable()
    if reason:
        pytest.skip(reason)
    srv = PulsarServer(
        tmp_path_factory.mktemp("amqppulsar"),
        amqp_url=AMQP_URL,
        managers=(f"mq{uuid.uuid4().hex[:10]}",),
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def amqp_pulsar_server(
    amqp_pulsar: PulsarServer, tmp_path_factory: pytest.TempPathFactory, allowed_dir: Path
) -> Iterator[Server]:
    """A jobgate server sending tasks to :func:`amqp_pulsar` over the message queue."""
    base = tmp_path_factory.mktemp("amqpsrv")
    entry = pulsar_entry(amqp_pulsar, amqp_url=AMQP_URL, manager=amqp_pulsar.managers[0])
    config = pulsar_config(base / "backends.yml", {"pulsar": entry}, "pulsar")
    env = {
        "JOBGATE_CONFIG_FILE": str(config),
        "JOBGATE_ALLOWED_DIRS": str(allowed_dir),
        # The message queue brings the news; the REST poll is the slow safety net.
        "JOBGATE_POLL_INTERVAL": "5",
    }
    srv = Server(base / "data", env).start(timeout=60)
    yield srv
    srv.stop()
