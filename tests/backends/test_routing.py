"""The routing policy, rule by rule (pure logic: backends are names with a health flag)."""

from __future__ import annotations

from typing import Any

import pytest

from jobgate.backends.routing import Router, RoutingConfig, Unroutable
from jobgate.domain.models import TaskSpec


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def spec(**more: Any) -> TaskSpec:
    return TaskSpec.model_validate(
        {"executors": [{"image": "alpine", "command": ["true"]}], **more}
    )


def router(down: set[str] | None = None, **config: Any) -> tuple[Router, Clock]:
    clock = Clock()
    down = down if down is not None else set()
    r = Router(
        RoutingConfig.model_validate(config),
        ["ch", "uk", "hpc"],
        health=lambda n: n not in down,
        capacity_of=lambda n: None,
        clock=clock,
    )
    return r, clock


def test_data_locality_picks_the_backend_holding_most_inputs() -> None:
    r, _ = router(locality={"s3://bucket-ch/": "ch", "file:///gpfs/": "hpc"})
    task = spec(
        inputs=[
            {"path": "/a", "url": "s3://bucket-ch/a"},
            {"path": "/b", "url": "s3://bucket-ch/b"},
            {"path": "/c", "url": "file:///gpfs/c"},
        ]
    )
    route = r.route(task)
    assert route.backend == "ch"
    assert "2/3 inputs under s3://bucket-ch/" in route.reason


def test_resource_fit_never_chooses_a_backend_too_small() -> None:
    r, _ = router(limits={"ch": {"cpu_cores": 4}, "uk": {"ram_gb": 8}})
    assert r.route(spec(resources={"cpu_cores": 8, "ram_gb": 16})).backend == "hpc"
    with pytest.raises(Unroutable, match="no backend can hold"):
        router(limits={n: {"cpu_cores": 2} for n in ("ch", "uk", "hpc")})[0].route(
            spec(resources={"cpu_cores": 8})
        )


def test_resource_fit_beats_locality() -> None:
    r, _ = router(locality={"s3://bucket-ch/": "ch"}, limits={"ch": {"ram_gb": 1}})
    task = spec(inputs=[{"path": "/a", "url": "s3://bucket-ch/a"}], resources={"ram_gb": 4})
    assert r.route(task).backend != "ch"


def test_load_prefers_fewest_active_per_capacity() -> None:
    r, _ = router(capacity={"ch": 10, "uk": 2, "hpc": 100})
    for i in range(3):
        r.placed(f"c{i}", "ch")  # 0.3
    r.placed("u0", "uk")  # 0.5
    for i in range(40):
        r.placed(f"h{i}", "hpc")  # 0.4
    route = r.route(spec())
    assert route.backend == "ch"
    assert "least loaded (3/10 active)" in route.reason


def test_final_events_release_load() -> None:
    class Event:
        job_id = "c0"
        to_state = "COMPLETE"

    r, _ = router()
    r.placed("c0", "ch")
    assert r.active("ch") == 1
    r.observe(Event())
    assert r.active("ch") == 0


def test_unhealthy_backends_are_skipped_and_said_so() -> None:
    r, _ = router(down={"ch"}, locality={"s3://bucket-ch/": "ch"})
    route = r.route(spec(inputs=[{"path": "/a", "url": "s3://bucket-ch/a"}]))
    assert route.backend != "ch"
    assert "1 of 3 candidates down" in route.reason


def test_circuit_opens_after_failures_then_half_open_probe() -> None:
    r, clock = router(candidates=["ch", "uk"], failures=2, cooldown=30)
    r.failed("ch")
    assert r.route(spec()).backend == "ch"  # one failure: still closed
    r.failed("ch")
    assert r.is_open("ch")
    assert r.route(spec()).backend == "uk"
    clock.t = 31
    assert r.route(spec()).backend == "ch"  # half-open: one probe
    assert r.route(spec()).backend == "uk"  # ...and only one at a time
    r.failed("ch")  # the probe failed: open again
    clock.t = 40
    assert r.route(spec()).backend == "uk"
    clock.t = 80
    assert r.route(spec()).backend == "ch"
    r.succeeded("ch")  # the probe worked: closed
    assert not r.is_open("ch")


def test_all_down_still_routes_to_wait_on_one() -> None:
    r, _ = router(down={"ch", "uk", "hpc"})
    route = r.route(spec())
    assert "all candidates down" in route.reason


def test_exclude_and_candidates() -> None:
    r, _ = router(candidates=["uk", "hpc"])
    assert r.route(spec()).backend in ("uk", "hpc")
    assert r.route(spec(), exclude=["uk"]).backend == "hpc"
    with pytest.raises(Unroutable):
        r.route(spec(), exclude=["uk", "hpc"])


def test_config_file_routing_must_name_declared_backends(tmp_path: Any) -> None:
    from jobgate.backends import config_file

    path = tmp_path / "c.yaml"
    path.write_text(
        "backends:\n  a: {type: tes, url: 'http://127.0.0.1:1/ga4gh/tes/v1'}\n"
        "routing: {locality: {'s3://x/': b}}\n"
    )
    with pytest.raises(config_file.ConfigFileError, match=r"routing names backends .*\['b'\]"):
        config_file.load(path)
    path.write_text(
        "backends:\n  a: {type: tes, url: 'http://127.0.0.1:1/ga4gh/tes/v1', auth: bearer}\n"
    )
    with pytest.raises(config_file.ConfigFileError, match="auth: bearer needs"):
        config_file.load(path)
