"""The ``tes`` backend against real jobgate instances as the remote TES servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobgate.backends.base import SubmitContext
from jobgate.backends.tes.backend import TesBackend, TesConfig
from jobgate.domain.models import Job
from tests.auth.conftest import AUDIENCE, SUBMIT_GROUP
from tests.auth.issuer import Issuer
from tests.conftest import Server
from tests.federation.peers import (
    TES,
    FlakyProxy,
    echo,
    events,
    gateway_config,
    get,
    headers,
    remote,
    remote_tasks,
    sleeper,
    submit,
    tes_entry,
    wait,
)


def oidc_env(issuer: Issuer, **more: str) -> dict[str, str]:
    return {
        "JOBGATE_AUTH": "oidc,token",
        "JOBGATE_OIDC_ISSUERS": issuer.url,
        "JOBGATE_OIDC_AUDIENCE": AUDIENCE,
        "JOBGATE_OIDC_GROUPS_CLAIM": "wlcg.groups",
        "JOBGATE_SUBMIT_GROUPS": SUBMIT_GROUP,
        **more,
    }


class Peers:
    def __init__(self, base: Path, issuer: Issuer) -> None:
        self.base = base
        self.issuer = issuer
        self.ch = remote(base, "ch").start(timeout=90)
        self.uk = remote(base, "uk").start(timeout=90)
        self.sec = remote(base, "sec", **oidc_env(issuer)).start(timeout=90)
        self.sec_admin = (self.sec.data_dir / "admin-token").read_text().strip()
        # Runs two tasks at once (the others wait in its queue); forgets all when restarted.
        self.fickle = remote(base, "fickle", JOBGATE_SLOTS="2").start(timeout=90)
        self.proxy = FlakyProxy(self.ch.url)  # in front of ch, faults on demand
        config = gateway_config(
            base / "gateway.yaml",
            {
                "ch": tes_entry(self.ch, zones=["switzerland"]),
                "uk": tes_entry(self.uk),
                "sec": tes_entry(self.sec, auth="forward", token=self.sec_admin),
                "fickle": tes_entry(self.fickle, resubmit_lost=True),
                # The same server without a read token: only the submitter's own one.
                "sec-own": tes_entry(self.sec, auth="forward"),
                "lossy": {**tes_entry(self.ch), "url": self.proxy.url + TES, "timeout": 5},
            },
            default_backend="ch",
        )
        self.gw = Server(
            base / "gw",
            oidc_env(
                issuer, JOBGATE_CONFIG_FILE=str(config), JOBGATE_CREDENTIAL_BACKENDS="sec,sec-own"
            ),
        ).start(timeout=90)
        self.token = (self.gw.data_dir / "admin-token").read_text().strip()

    def stop(self) -> None:
        for srv in (self.gw, self.ch, self.uk, self.sec, self.fickle):
            srv.stop()
        self.proxy.close()


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    issuer = Issuer()
    p = Peers(tmp_path_factory.mktemp("fed"), issuer)
    yield p
    p.stop()
    issuer.close()


def test_task_runs_on_the_remote_and_its_logs_come_back(peers: Peers) -> None:
    out_dir = peers.base / "ch-files"
    task = echo(
        "hello from afar",
        outputs=[{"path": "/data/out.txt", "url": f"file://{out_dir}/out.txt"}],
    )
    task["executors"][0]["command"] = ["sh", "-c", "echo hello from afar | tee /data/out.txt"]
    task["resources"] = {"backend_parameters": {"backend": "ch"}}
    job = submit(peers.gw, task, peers.token)
    done = wait(peers.gw, job, peers.token)
    assert done["state"] == "COMPLETE", done
    tlog = done["logs"][-1]
    assert tlog["logs"][0]["stdout"] == "hello from afar\n"
    assert tlog["logs"][0]["exit_code"] == 0
    remote_id = tlog["metadata"]["remote_id"]
    assert tlog["metadata"]["remote_service"] == peers.ch.url + TES
    assert tlog["metadata"]["remote_backend"] == "ch"
    # The output reached its URL (the remote staged it) and is listed in the task log.
    assert (out_dir / "out.txt").read_text() == "hello from afar\n"
    assert [o["url"] for o in tlog["outputs"]] == [f"file://{out_dir}/out.txt"]
    # The remote holds exactly one task for the job, tagged with it.
    there = remote_tasks(peers.ch, job)
    assert [t["id"] for t in there] == [remote_id]
    assert get(peers.ch, remote_id).json()["state"] == "COMPLETE"


def test_executor_error_and_exit_code(peers: Peers) -> None:
    task = {"executors": [{"image": "alpine", "command": ["sh", "-c", "echo oops >&2; exit 3"]}]}
    job = submit(peers.gw, task, peers.token)
    done = wait(peers.gw, job, peers.token)
    assert done["state"] == "EXECUTOR_ERROR"
    assert done["logs"][-1]["logs"][0]["exit_code"] == 3
    assert done["logs"][-1]["logs"][0]["stderr"] == "oops\n"


def test_remote_system_error_comes_back_with_its_reason(peers: Peers) -> None:
    # The remote allows file:// only under its own directory: its reason comes back.
    task = echo("x", inputs=[{"path": "/data/in", "url": "file:///etc/hostname"}])
    job = submit(peers.gw, task, peers.token)
    done = wait(peers.gw, job, peers.token)
    assert done["state"] == "SYSTEM_ERROR"
    lines = done["logs"][-1]["system_logs"]
    assert any(line.startswith("ch: ") and "/etc/hostname" in line for line in lines), lines


def test_cancel_reaches_the_remote_process(peers: Peers) -> None:
    job = submit(peers.gw, sleeper(300, resources={"zones": ["switzerland"]}), peers.token)
    running = wait(peers.gw, job, peers.token, states={"RUNNING"})
    remote_id = running["logs"][-1]["metadata"]["remote_id"]
    wait(peers.ch, remote_id, states={"RUNNING"})
    r = httpx.post(f"{peers.gw.url}{TES}/tasks/{job}:cancel", headers=headers(peers.token))
    assert r.status_code == 200
    assert wait(peers.gw, job, peers.token)["state"] == "CANCELED"
    # The remote reports CANCELED only once the process tree is gone.
    assert wait(peers.ch, remote_id, timeout=10)["state"] == "CANCELED"


def test_forwarded_credential_is_the_real_user_at_the_remote(peers: Peers) -> None:
    alice = peers.issuer.token("alice", groups=[SUBMIT_GROUP])
    bob = peers.issuer.token("bob", groups=[SUBMIT_GROUP])
    job = submit(
        peers.gw, echo("mine", resources={"backend_parameters": {"backend": "sec"}}), alice
    )
    done = wait(peers.gw, job, alice)
    assert done["state"] == "COMPLETE", done
    remote_id = done["logs"][-1]["metadata"]["remote_id"]
    # At the remote the task is alice's: she sees it, bob does not.
    assert get(peers.sec, remote_id, alice).status_code == 200
    assert get(peers.sec, remote_id, bob).status_code in (403, 404)
    rec = httpx.get(f"{peers.sec.url}/api/v1/jobs/{remote_id}", headers=headers(alice)).json()
    assert rec["owner"].endswith("alice"), rec


def test_pytes_client_through_the_gateway(peers: Peers) -> None:
    tes = pytest.importorskip("tes")
    cli = tes.HTTPClient(peers.gw.url, timeout=10, token=peers.token)
    task_id = cli.create_task(
        tes.Task(
            executors=[tes.Executor(image="alpine", command=["echo", "via py-tes"])],
            resources=tes.Resources(backend_parameters={"backend": "uk"}),
        )
    )
    done = cli.wait(task_id, timeout=40)
    assert done.state == "COMPLETE"
    full = cli.get_task(task_id, view="FULL")
    assert full.logs[-1].logs[0].stdout == "via py-tes\n"
    assert full.logs[-1].metadata["remote_backend"] == "uk"


def _first(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(tasks) == 1, tasks
    return tasks[0]


def test_gateway_restart_readopts_tasks_in_flight(peers: Peers) -> None:
    alice = peers.issuer.token("alice", groups=[SUBMIT_GROUP])
    jobs = [
        submit(
            peers.gw, sleeper(2, resources={"backend_parameters": {"backend": "uk"}}), peers.token
        )
        for _ in range(3)
    ]
    # Followed after the restart with alice's own token only (sec-own has no read token).
    task = sleeper(3, resources={"backend_parameters": {"backend": "sec-own"}})
    task["executors"][0]["command"] = ["sh", "-c", "sleep 3; echo still alice"]
    hers = submit(peers.gw, task, alice)
    for job in jobs:
        wait(peers.gw, job, peers.token, states={"QUEUED", "RUNNING"})
    wait(peers.gw, hers, alice, states={"RUNNING"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(remote_tasks(peers.uk, j) for j in jobs):
        time.sleep(0.1)
    peers.gw.kill9()
    peers.gw.start(timeout=90)
    for job in jobs:
        done = wait(peers.gw, job, peers.token)
        assert done["state"] == "COMPLETE", done
        _first(remote_tasks(peers.uk, job))  # created once, never again
        assert len(done["logs"]) == 1
    done = wait(peers.gw, hers, alice)
    assert done["state"] == "COMPLETE", done
    assert done["logs"][-1]["logs"][0]["stdout"] == "still alice\n"
    remote_id = _first(remote_tasks(peers.sec, hers, alice))["id"]
    rec = httpx.get(f"{peers.sec.url}/api/v1/jobs/{remote_id}", headers=headers(alice)).json()
    assert rec["owner"].endswith("alice"), rec


def test_a_lost_create_reply_is_found_by_tag_not_created_again(peers: Peers) -> None:
    proxy = FlakyProxy(peers.ch.url)
    proxy.drop_creates = 1
    backend = TesBackend(
        TesConfig(url=proxy.url + TES, auth="none", gateway="gw-lost", timeout=5),
        name="lossy",
    )
    job = Job.model_validate(
        {"id": "lost-reply-1", "creation_time": datetime.now(UTC), **echo("once")}
    )

    async def run() -> str:
        try:
            return await backend.submit(job, SubmitContext(attempt=1))
        finally:
            await backend.close()

    try:
        remote_id = asyncio.run(run())
    finally:
        proxy.close()
    assert [t["id"] for t in remote_tasks(peers.ch, job.id)] == [remote_id]


def _details(srv: Server, job: str, token: str | None = None) -> list[str]:
    return [e["detail"] or "" for e in events(srv, job, token)]


def test_a_forgotten_task_is_resubmitted_only_if_it_never_ran(peers: Peers) -> None:
    # A second gateway routes between fickle and uk (ties go to fickle, listed first).
    routed = Server(
        peers.base / "gw-routed",
        {
            "JOBGATE_CONFIG_FILE": str(
                gateway_config(
                    peers.base / "gw-routed.yaml",
                    {
                        "fickle": tes_entry(peers.fickle, resubmit_lost=True),
                        "uk": tes_entry(peers.uk),
                    },
                    default_backend="fickle",
                    routing={"candidates": ["fickle", "uk"]},
                )
            )
        },
    ).start(timeout=90)
    try:
        on_fickle = {"resources": {"backend_parameters": {"backend": "fickle"}}}
        started = submit(peers.gw, sleeper(30, **on_fickle), peers.token)
        wait(peers.gw, started, peers.token, states={"RUNNING"})
        blocker = submit(peers.fickle, sleeper(30))
        wait(peers.fickle, blocker, states={"RUNNING"})
        # Both wait in fickle's queue: they never ran there.
        placed = submit(peers.gw, echo("placed", **on_fickle), peers.token)
        chosen = submit(routed, echo("routed"))
        for srv, job, token in ((peers.gw, placed, peers.token), (routed, chosen, None)):
            queued = wait(srv, job, token, states={"QUEUED"})
            deadline = time.monotonic() + 20
            while "remote_id" not in queued["logs"][-1].get("metadata", {}):
                assert time.monotonic() < deadline, queued
                time.sleep(0.1)
                queued = get(srv, job, token).json()
            assert queued["logs"][-1]["metadata"]["remote_backend"] == "fickle"
            assert wait(
                peers.fickle, queued["logs"][-1]["metadata"]["remote_id"], states={"QUEUED"}
            )
        # fickle comes back at the same address without its data: every task is a 404.
        peers.fickle.kill9()
        port = peers.fickle.port
        peers.fickle = remote(peers.base, "fickle-fresh")
        peers.fickle.port, peers.fickle.url = port, f"http://127.0.0.1:{port}"
        peers.fickle.start(timeout=90)

        lost = wait(peers.gw, started, peers.token, timeout=60)
        assert lost["state"] == "SYSTEM_ERROR"
        assert any("404" in line for line in lost["logs"][-1]["system_logs"]), lost

        again = wait(peers.gw, placed, peers.token, timeout=60)
        assert again["state"] == "COMPLETE", again
        assert again["logs"][-1]["logs"][0]["stdout"] == "placed\n"
        assert again["logs"][-1]["metadata"]["remote_backend"] == "fickle"
        _first(remote_tasks(peers.fickle, placed))  # created once on the fresh remote
        why = [d for d in _details(peers.gw, placed, peers.token) if d.startswith("resubmitted")]
        assert len(why) == 1 and "404" in why[0] and "submitted to fickle again" in why[0], why

        moved = wait(routed, chosen, timeout=60)
        assert moved["state"] == "COMPLETE", moved
        assert moved["logs"][-1]["metadata"]["remote_backend"] == "uk"
        assert not remote_tasks(peers.fickle, chosen)
        _first(remote_tasks(peers.uk, chosen))
        why = [d for d in _details(routed, chosen) if d.startswith("resubmitted")]
        assert len(why) == 1 and "before it ever ran" in why[0] and "routed to uk" in why[0], why
    finally:
        routed.stop()


def test_a_lost_create_reply_while_the_remote_is_unreachable(peers: Peers) -> None:
    # The create reaches ch but its reply is lost, and both lookups by tag (0.5 s, 2.5 s
    # later) find ch unreachable: the job is followed under a placeholder until ch answers.
    peers.proxy.drop_creates = 1
    peers.proxy.dark_until = time.monotonic() + 6
    hung_up = peers.proxy.hung_up
    job = submit(
        peers.gw,
        echo("only once", resources={"backend_parameters": {"backend": "lossy"}}),
        peers.token,
    )
    done = wait(peers.gw, job, peers.token, timeout=60)
    assert done["state"] == "COMPLETE", done
    assert peers.proxy.hung_up - hung_up >= 3  # the create and at least both lookups
    assert done["logs"][-1]["logs"][0]["stdout"] == "only once\n"
    remote_id = done["logs"][-1]["metadata"]["remote_id"]
    assert [t["id"] for t in remote_tasks(peers.ch, job)] == [remote_id]


def test_live_logs_of_a_remote_task_while_it_runs(peers: Peers) -> None:
    script = "echo first; echo oops >&2; sleep 8; echo second"
    task = {
        "executors": [{"image": "alpine", "command": ["sh", "-c", script]}],
        "resources": {"backend_parameters": {"backend": "ch"}},
    }
    job = submit(peers.gw, task, peers.token)
    running = wait(peers.gw, job, peers.token, states={"RUNNING"})
    remote_id = running["logs"][-1]["metadata"]["remote_id"]
    # The remote's FULL view shows the tails written so far.
    deadline = time.monotonic() + 10
    there = get(peers.ch, remote_id).json()
    while not there.get("logs", [{}])[-1].get("logs"):
        assert time.monotonic() < deadline, there
        time.sleep(0.2)
        there = get(peers.ch, remote_id).json()
    assert there["state"] == "RUNNING"
    assert there["logs"][-1]["logs"][0]["stdout"] == "first\n"
    assert there["logs"][-1]["logs"][0]["stderr"] == "oops\n"
    # The gateway's log stream shows the line before the task ends.
    with httpx.stream(
        "GET",
        f"{peers.gw.url}/api/v1/jobs/{job}/logs",
        params={"stream": "stdout", "follow": "true"},
        headers=headers(peers.token),
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert next(r.iter_lines()) == "first"
        assert get(peers.gw, job, peers.token).json()["state"] == "RUNNING"
    err = httpx.get(
        f"{peers.gw.url}/api/v1/jobs/{job}/logs",
        params={"stream": "stderr"},
        headers=headers(peers.token),
        timeout=30,
    )
    assert err.text == "oops\n"
    done = wait(peers.gw, job, peers.token)
    assert done["logs"][-1]["logs"][0]["stdout"] == "first\nsecond\n"
    # Once it ended, the log endpoint shows all of it (kept by the gateway).
    after = httpx.get(
        f"{peers.gw.url}/api/v1/jobs/{job}/logs", headers=headers(peers.token), timeout=30
    )
    assert after.text == "first\nsecond\n"
