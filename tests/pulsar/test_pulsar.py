"""The Pulsar backend against real Pulsar servers: what the contract suite does not cover
(``tests/test_contract.py`` runs the shared TES behaviour on the ``pulsar`` and
``pulsar-amqp`` sites).

One session Pulsar server (``tests/pulsar/servers.py``) serves most tests; the tests that
stop or kill a server start their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from jobgate.backends.pulsar import PulsarBackend, PulsarConfig
from jobgate.domain.models import JobRecord
from jobgate.domain.states import State
from tests.conftest import Server
from tests.pulsar.pulsarserver import PulsarServer
from tests.pulsar.servers import pulsar_config, pulsar_entry
from tests.support import (
    api_client,
    create,
    get_job,
    run,
    sh,
    sh_task,
    sleep_marker,
    stdouts,
    system_logs,
    tes_client,
    uid,
    wait_final,
    wait_procs,
    wait_state,
    wait_until,
)


def routed(task: dict[str, Any], backend: str) -> dict[str, Any]:
    return {**task, "resources": {"backend_parameters": {"backend": backend}}}


def staging_dirs(pulsar: PulsarServer) -> set[str]:
    root = pulsar.base / "files" / "staging"
    return {p.name for p in root.iterdir()} if root.exists() else set()


@pytest.fixture()
def tes(pulsar_server: Server) -> Iterator[httpx.Client]:
    with tes_client(pulsar_server) as client:
        yield client


# -- one Pulsar --------------------------------------------------------------------------------


def test_the_pulsar_job_is_named_in_the_logs_and_its_directory_is_removed_after(
    tes: httpx.Client, pulsar: PulsarServer
) -> None:
    task = run(tes, {"executors": [sh("echo hi")], "tags": {"project": "p1"}})
    assert task["state"] == "COMPLETE", system_logs(task)
    meta = task["logs"][0]["metadata"]
    pid = meta["pulsar_job_id"]
    assert pid == f"{task['id']}-1"
    assert meta["pulsar_url"] == pulsar.url and meta["pulsar_manager"] == "_default_"
    wait_until(lambda: pid not in staging_dirs(pulsar), timeout=10, what="Pulsar cleanup")


def test_a_task_canceled_as_soon_as_submitted_never_finishes(
    tes: httpx.Client, allowed_dir: Path
) -> None:
    ran = allowed_dir / uid()
    task_id = create(tes, sh_task(f"sleep 1; echo ran > {ran}"))
    wait_state(tes, task_id, {"QUEUED", "RUNNING"})
    assert tes.post(f"/tasks/{task_id}:cancel").status_code == 200
    task = wait_final(tes, task_id)
    assert task["state"] == "CANCELED", task
    time.sleep(1.5)
    assert not ran.exists()  # killed in Pulsar, wherever it was (its queue or running)


def test_a_glob_output_comes_back_and_is_uploaded(tes: httpx.Client, allowed_dir: Path) -> None:
    dest = allowed_dir / uid()
    task = run(
        tes,
        {
            "executors": [sh('cd "$JOBGATE_TASK_ROOT/data" && echo 1 > a.txt && echo 2 > b.log')],
            "volumes": ["/data"],
            "outputs": [{"path": "/data/*.txt", "path_prefix": "/data", "url": dest.as_uri()}],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert (dest / "a.txt").read_text() == "1\n"
    assert not (dest / "b.log").exists()
    assert [o["path"] for o in task["logs"][0]["outputs"]] == ["/data/a.txt"]


def test_a_result_with_a_link_out_of_the_task_is_refused(
    tes: httpx.Client, allowed_dir: Path
) -> None:
    # The result tar is the task's own making: an absolute symlink must not reach the
    # gateway's filesystem through the output upload.
    dest = allowed_dir / uid()
    task = run(
        tes,
        {
            "executors": [
                sh('mkdir -p "$JOBGATE_TASK_ROOT/out" && ln -s /etc "$JOBGATE_TASK_ROOT/out/etc"')
            ],
            "outputs": [{"path": "/out", "url": dest.as_uri(), "type": "DIRECTORY"}],
        },
    )
    assert task["state"] == "SYSTEM_ERROR", task
    assert "refused" in system_logs(task)
    assert not (dest / "etc" / "passwd").exists()


# -- several Pulsars in one gateway ------------------------------------------------------------


@pytest.fixture(scope="module")
def second_pulsar(
    tmp_path_factory: pytest.TempPathFactory, pulsar: PulsarServer
) -> Iterator[PulsarServer]:
    srv = PulsarServer(tmp_path_factory.mktemp("pulsar2"), token="other-token").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def multi_server(
    pulsar: PulsarServer,
    second_pulsar: PulsarServer,
    tmp_path_factory: pytest.TempPathFactory,
    allowed_dir: Path,
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("multi")
    backends = {
        "p1": pulsar_entry(pulsar),
        "p1-other": pulsar_entry(pulsar, manager="other"),
        "p2": pulsar_entry(second_pulsar),
        "badtoken": {**pulsar_entry(pulsar), "private_token": "wrong"},
        "nomanager": pulsar_entry(pulsar, manager="nosuch"),
    }
    config = pulsar_config(base / "backends.yml", backends, "p1")
    env = {"JOBGATE_CONFIG_FILE": str(config), "JOBGATE_ALLOWED_DIRS": str(allowed_dir)}
    srv = Server(base / "data", env).start(timeout=60)
    yield srv
    srv.stop()


@pytest.fixture()
def multi(multi_server: Server) -> Iterator[httpx.Client]:
    with tes_client(multi_server) as client:
        yield client


def test_several_pulsar_servers_and_managers_in_one_gateway(
    multi: httpx.Client, pulsar: PulsarServer, second_pulsar: PulsarServer
) -> None:
    ids = {
        name: create(multi, routed(sh_task(f"echo {name}"), name))
        for name in ("p1", "p1-other", "p2")
    }
    for name, task_id in ids.items():
        task = wait_final(multi, task_id)
        assert task["state"] == "COMPLETE", system_logs(task)
        assert stdouts(task) == [f"{name}\n"]
        meta = task["logs"][0]["metadata"]
        assert meta["backend"] == name
        want = second_pulsar if name == "p2" else pulsar
        assert meta["pulsar_url"] == want.url
        assert meta["pulsar_manager"] == ("other" if name == "p1-other" else "_default_")


def test_a_wrong_private_token_is_said_at_start_and_a_clear_system_error(
    multi: httpx.Client, multi_server: Server
) -> None:
    bad = wait_final(multi, create(multi, routed(sh_task("true"), "badtoken")))
    assert bad["state"] == "SYSTEM_ERROR"
    assert "refused the private_token" in system_logs(bad)
    log = multi_server.log()
    assert "backend badtoken: Pulsar at" in log and "refused the private_token" in log


def test_a_missing_manager_keeps_the_task_waiting_with_the_reason(
    multi: httpx.Client, multi_server: Server
) -> None:
    # Pulsar answers an unknown manager with HTTP 500, as it does any failure of its own:
    # the task waits (the backend's patience) with the reason in its detail.
    task_id = create(multi, routed(sh_task("true"), "nomanager"))

    with api_client(multi_server) as api:

        def says_why() -> bool:
            job = get_job(api, task_id)
            return job["state"] == "QUEUED" and "manager 'nosuch'" in str(job["detail"])

        wait_until(says_why, timeout=20, what="the detail names the manager")
    assert multi.post(f"/tasks/{task_id}:cancel").status_code == 200
    assert wait_final(multi, task_id)["state"] == "CANCELED"


# -- restarts --------------------------------------------------------------------------------


def kill_procs_under(path: Path) -> None:
    """SIGKILL every process working in ``path`` (a Pulsar server's jobs run in their own
    sessions: killing the server leaves them)."""
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(path)):
                proc.kill()


def own_gateway(
    base: Path,
    pulsar: PulsarServer,
    allowed: Path,
    options: dict[str, object] | None = None,
    **extra: str,
) -> Server:
    base.mkdir(parents=True, exist_ok=True)
    entry = pulsar_entry(pulsar, **(options or {}))
    config = pulsar_config(base / "backends.yml", {"pulsar": entry}, "pulsar")
    env = {
        "JOBGATE_CONFIG_FILE": str(config),
        "JOBGATE_ALLOWED_DIRS": str(allowed),
        "JOBGATE_POLL_INTERVAL": "0.2",
        **extra,
    }
    return Server(base / "data", env)


def test_a_gateway_killed_mid_job_adopts_it_and_it_runs_once(
    tmp_path: Path, pulsar: PulsarServer, allowed_dir: Path
) -> None:
    count = allowed_dir / uid()
    out = allowed_dir / uid()
    srv = own_gateway(tmp_path, pulsar, allowed_dir).start(timeout=60)
    try:
        with tes_client(srv) as tes:
            task_id = create(
                tes,
                {
                    "executors": [
                        sh(f'echo run >> {count}; sleep 2; echo done > "$JOBGATE_TASK_ROOT/o"')
                    ],
                    "outputs": [{"path": "/o", "url": out.as_uri()}],
                },
            )
            wait_until(count.exists, timeout=20, what="the task started")
        srv.kill9()
        srv.start(timeout=60)
        with tes_client(srv) as tes:
            task = wait_final(tes, task_id, timeout=30)
        assert task["state"] == "COMPLETE", system_logs(task)
        assert count.read_text() == "run\n"  # once: adopted, not submitted again
        assert out.read_text() == "done\n"
    finally:
        srv.stop()


def test_a_pulsar_down_keeps_tasks_queued_and_a_pulsar_killed_mid_job_ends_clearly(
    tmp_path: Path, allowed_dir: Path
) -> None:
    down = PulsarServer(tmp_path / "pulsar")
    down.configure()  # its port is fixed by its config; it is not running yet
    srv = own_gateway(
        tmp_path / "gw",
        down,
        allowed_dir,
        {"liveness_timeout": 4},
        JOBGATE_SUBMIT_RETRY_MAX_DELAY="1",
    ).start(timeout=60)
    try:
        with tes_client(srv) as tes:
            waiting = create(tes, sh_task("echo late"))
            time.sleep(2)
            task = tes.get(f"/tasks/{waiting}", params={"view": "FULL"}).json()
            assert task["state"] == "QUEUED", task
            down.start()
            task = wait_final(tes, waiting, timeout=30)
            assert task["state"] == "COMPLETE", system_logs(task)
            assert stdouts(task) == ["late\n"]

            marker = sleep_marker()
            running = create(tes, sh_task(f"sleep {marker}"))
            wait_state(tes, running, {"RUNNING"})
            wait_procs(marker, present=True, timeout=20)
            down.kill()
            kill_procs_under(down.base)  # its job's too, as a crash of the host would
            time.sleep(1)
            assert tes.get(f"/tasks/{running}").json()["state"] == "RUNNING"  # it waits
            down.start()
            # Pulsar cannot run it again (queued_python drops a job's command line once it
            # starts it) and calls it running for ever: its silent heartbeat ends it.
            task = wait_final(tes, running, timeout=30)
            assert task["state"] == "SYSTEM_ERROR", task
            assert "heartbeat" in system_logs(task)
    finally:
        srv.stop()
        down.stop()


async def test_a_job_set_up_but_never_submitted_is_not_adopted(
    pulsar: PulsarServer, tmp_path: Path
) -> None:
    # The gateway died between Pulsar's setup and the submit (the job is INITIALIZING,
    # its Pulsar id not recorded): it must run again, not wait for ever on a job Pulsar
    # will never start. One it recorded is adopted: Pulsar stages its inputs.
    backend = PulsarBackend(
        PulsarConfig(pulsar.url, pulsar.token, "_default_", tmp_path, 1024), name="p"
    )
    try:
        pid = f"half-{uid()}-1"
        await backend.client.setup(pid)
        record = JobRecord(
            id=backend.job_id(pid),
            state=State.INITIALIZING,
            spec={},
            logs=None,
            created_at=datetime.now(UTC),
            native_id=None,
            attempt=1,
        )
        unknown = dataclasses.replace(record, id=f"none-{uid()}")
        assert await backend.reattach([record, unknown]) == {}
        recorded = dataclasses.replace(record, native_id=pid)
        assert await backend.reattach([recorded]) == {record.id: pid}
        await backend.client.clean(pid)

        # Submitted, and the gateway died before it recorded so: found by its attempt.
        sent = f"sent-{uid()}-1"
        await backend.client.setup(sent)
        await backend.client.submit(sent, "true")
        caught = dataclasses.replace(record, id=backend.job_id(sent))
        assert await backend.reattach([caught]) == {caught.id: sent}
        await backend.client.clean(sent)
    finally:
        await backend.close()


def test_a_running_tasks_output_is_readable_while_it_runs(
    tes: httpx.Client, pulsar_server: Server
) -> None:
    marker = sleep_marker()
    task_id = create(tes, sh_task(f"echo live-line; sleep {marker}"))
    try:
        wait_state(tes, task_id, {"RUNNING"})
        with api_client(pulsar_server) as api:

            def shows_the_line() -> bool:
                r = api.get(f"/jobs/{task_id}/logs", params={"stream": "stdout", "executor": 0})
                return r.status_code == 200 and "live-line" in r.text

            wait_until(shows_the_line, timeout=20, what="the live stdout")
    finally:
        tes.post(f"/tasks/{task_id}:cancel")
    assert wait_final(tes, task_id)["state"] == "CANCELED"
