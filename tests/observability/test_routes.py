"""The HTTP metrics' route label: a route template, never a raw path (bounded values)."""

from __future__ import annotations

from typing import Any

from jobgate.api.metrics import route_template


def scope(url_path: str, **params: Any) -> dict[str, Any]:
    return {"type": "http", "path": url_path, "path_params": params, "endpoint": object()}


def test_path_parameters_become_their_names() -> None:
    assert route_template(scope("/ga4gh/tes/v1/tasks/abc", task_id="abc")) == (
        "/ga4gh/tes/v1/tasks/{task_id}"
    )
    assert route_template(scope("/ga4gh/tes/v1/tasks/abc:cancel", task_id="abc")) == (
        "/ga4gh/tes/v1/tasks/{task_id}:cancel"
    )
    assert route_template(scope("/api/v1/jobs/j1/files/a/b.txt", job_id="j1", path="a/b.txt")) == (
        "/api/v1/jobs/{job_id}/files/{path}"
    )


def test_a_value_equal_to_a_literal_segment_stays_within_the_routes_words() -> None:
    got = route_template(scope("/api/v1/jobs/jobs", job_id="jobs"))
    assert got == "/api/v1/jobs/{job_id}"


def test_unmatched_paths_share_one_label() -> None:
    assert route_template({"type": "http", "path": "/no/such/thing/123"}) == "unmatched"
