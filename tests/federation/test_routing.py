"""Routing across real jobgate instances: each rule, and failover when a remote refuses
or dies mid-run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.federation.peers import (
    TES,
    echo,
    events,
    gateway_config,
    remote,
    remote_tasks,
    sleeper,
    submit,
    tes_entry,
    wait,
)


class Routed:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "shared"
        for site in ("ch", "busy"):
            (self.data / site).mkdir(parents=True)
            (self.data / site / "in.txt").write_text(f"data at {site}\n")
        shared = {"JOBGATE_ALLOWED_DIRS": str(self.data)}
        self.ch = remote(base, "ch", **shared).start(timeout=90)
        self.uk = remote(base, "uk", **shared).start(timeout=90)
        # Refuses every submission after the first: 429 with a long Retry-After.
        self.busy = remote(
            base, "busy", JOBGATE_SUBMIT_RATE="0.01", JOBGATE_SUBMIT_BURST="1", **shared
        ).start(timeout=90)
        submit(self.busy, echo("the one allowed"))
        self.eph = remote(base, "eph", **shared).start(timeout=90)
        config = gateway_config(
            base / "gateway.yaml",
            {
                "ch": tes_entry(self.ch, zones=["switzerland"]),
                "uk": tes_entry(self.uk),
                "busy": tes_entry(self.busy),
                "eph": tes_entry(self.eph, timeout=5),
            },
            default_backend="ch",
            routing={
                "candidates": ["ch", "uk", "busy"],
                "locality": {
                    f"file://{self.data}/ch/": "ch",
                    f"file://{self.data}/busy/": "busy",
                },
                "limits": {
                    "ch": {"cpu_cores": 1},
                    "uk": {"cpu_cores": 4},
                    "busy": {"cpu_cores": 1},
                },
                "capacity": {"ch": 2, "uk": 2, "busy": 2},
                "failures": 1,
                "cooldown": 300,
            },
        )
        self.gw = Server(base / "gw", {"JOBGATE_CONFIG_FILE": str(config)}).start(timeout=90)

    def stop(self) -> None:
        for srv in (self.gw, self.ch, self.uk, self.busy, self.eph):
            srv.stop()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    r = Routed(tmp_path_factory.mktemp("route"))
    yield r
    r.stop()


def routed_to(fed: Routed, job: str) -> str:
    done = wait(fed.gw, job)
    assert done["state"] == "COMPLETE", done
    backend: str = done["logs"][-1]["metadata"]["remote_backend"]
    return backend


def first_detail(fed: Routed, job: str) -> str:
    detail: str = events(fed.gw, job)[0]["detail"]
    return detail


def test_explicit_zone_wins(fed: Routed) -> None:
    job = submit(fed.gw, echo("z", resources={"zones": ["switzerland"]}))
    assert routed_to(fed, job) == "ch"
    job = submit(fed.gw, echo("b", resources={"backend_parameters": {"backend": "eph"}}))
    assert routed_to(fed, job) == "eph"  # not a routing candidate, but named


def test_data_locality(fed: Routed) -> None:
    task = echo("x", inputs=[{"path": "/data/in.txt", "url": f"file://{fed.data}/ch/in.txt"}])
    task["executors"][0]["command"] = ["cat", "/data/in.txt"]
    job = submit(fed.gw, task)
    assert routed_to(fed, job) == "ch"
    assert "routed to ch: 1/1 inputs under" in first_detail(fed, job)
    assert wait(fed.gw, job)["logs"][-1]["logs"][0]["stdout"] == "data at ch\n"


def test_resource_fit(fed: Routed) -> None:
    # Its inputs are at ch, but ch takes 1 core at most.
    task = echo(
        "big",
        inputs=[{"path": "/data/in.txt", "url": f"file://{fed.data}/ch/in.txt"}],
        resources={"cpu_cores": 2},
    )
    job = submit(fed.gw, task)
    assert routed_to(fed, job) == "uk"
    assert "candidates too small" in first_detail(fed, job)


def test_no_backend_fits_is_a_400(fed: Routed) -> None:
    r = httpx.post(fed.gw.url + TES + "/tasks", json=echo("huge", resources={"cpu_cores": 8}))
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["where"] == "body.resources"
    assert "no backend can hold" in r.json()["errors"][0]["what"]


def test_load_spreads_jobs(fed: Routed) -> None:
    jobs = [submit(fed.gw, sleeper(1.5)) for _ in range(4)]
    where = [routed_to(fed, j) for j in jobs]
    # ch and uk have capacity 2 each (busy refuses and is skipped once it did).
    assert sorted(where).count("ch") >= 1 and sorted(where).count("uk") >= 1, where


def test_failover_when_a_remote_refuses(fed: Routed) -> None:
    task = echo("x", inputs=[{"path": "/data/in.txt", "url": f"file://{fed.data}/busy/in.txt"}])
    job = submit(fed.gw, task)
    backend = routed_to(fed, job)
    assert backend in ("ch", "uk")
    details = [e["detail"] or "" for e in events(fed.gw, job)]
    assert any(d.startswith("failed over from busy") for d in details) or ("down" in details[0]), (
        details
    )
    assert not remote_tasks(fed.busy, job)  # never created there


def test_failover_when_a_remote_is_killed_mid_run(fed: Routed) -> None:
    job = submit(fed.gw, sleeper(60, resources={"backend_parameters": {"backend": "eph"}}))
    running = wait(fed.gw, job, states={"RUNNING"})
    assert running["logs"][-1]["metadata"]["remote_backend"] == "eph"
    fed.eph.kill9()
    # Others keep working meanwhile.
    assert routed_to(fed, submit(fed.gw, echo("still here"))) in ("ch", "uk")
    # It comes back without its data: the task it held is gone (404).
    port = fed.eph.port
    fed.eph = remote(fed.base, "eph-fresh")
    fed.eph.port, fed.eph.url = port, f"http://127.0.0.1:{port}"
    fed.eph.start(timeout=90)
    done = wait(fed.gw, job, timeout=60)
    assert done["state"] == "SYSTEM_ERROR"
    assert any("404" in line for line in done["logs"][-1]["system_logs"]), done
