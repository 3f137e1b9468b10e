"""The OpenAPI document lists the answers the server gives and the bodies it takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobgate.api.app import create_app
from jobgate.config import Settings

ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("doc"), auth=("token",))
    return create_app(settings, dispatch=False).openapi()


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.upper(), path): op for path, item in doc["paths"].items() for m, op in item.items()}


def test_every_error_answer_is_the_projects_error_body(doc: dict[str, Any]) -> None:
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "status", "message"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for key, op in operations(doc).items():
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")):
                assert answer["content"]["application/json"]["schema"] == ERROR_REF, key


def test_validation_errors_are_400_and_422_only_means_a_reused_idempotency_key(
    doc: dict[str, Any],
) -> None:
    ops = operations(doc)
    with_422 = {key for key, op in ops.items() if "422" in op["responses"]}
    assert with_422 == {
        ("POST", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs/bulk"),
        ("POST", "/api/v1/jobs/parametric"),
        ("POST", "/v1/worksteps"),
    }
    for key, op in ops.items():
        if "requestBody" in op or any(p["in"] == "query" for p in op.get("parameters", [])):
            assert "400" in op["responses"], key


def test_authenticated_operations_list_401_and_the_public_ones_do_not(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    public = {("GET", "/healthz"), ("GET", "/ga4gh/tes/v1/service-info")}
    for key, op in ops.items():
        assert ("401" in op["responses"]) is (key not in public), key
    challenge = ops[("GET", "/api/v1/me")]["responses"]["401"]["headers"]
    assert "WWW-Authenticate" in challenge


def test_the_real_answers_of_submissions_files_and_job_control(doc: dict[str, Any]) -> None:
    ops = operations(doc)

    def codes(method: str, path: str) -> set[str]:
        return set(ops[(method, path)]["responses"])

    assert codes("POST", "/api/v1/jobs") == {"201", "400", "401", "403", "409", "413", "422", "429"}
    assert "Retry-After" in ops[("POST", "/api/v1/jobs")]["responses"]["429"]["headers"]
    assert {"200", "201", "409", "413"} <= codes("PUT", "/api/v1/jobs/{job_id}/files/{path}")
    assert {"200", "201", "413"} <= codes("POST", "/api/v1/sandboxes")
    assert {"403", "404", "409"} <= codes("DELETE", "/api/v1/jobs/{job_id}")
    assert {"403", "429"} <= codes("POST", "/ga4gh/tes/v1/tasks")
    assert {"404"} <= codes("GET", "/ga4gh/tes/v1/tasks/{task_id}")


def test_hand_parsed_bodies_are_declared_as_json_and_yaml(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    schemas = doc["components"]["schemas"]
    expected = {
        "/api/v1/jobs": "JobRequest",
        "/api/v1/jobs/parametric": "ParametricRequest",
        "/api/v1/jobs/search": "SearchRequest",
        "/api/v1/jobs/summary": "SummaryRequest",
        "/v1/worksteps": "WorkstepRequest",
    }
    for path, model in expected.items():
        content = ops[("POST", path)]["requestBody"]["content"]
        for media_type in ("application/json", "application/yaml"):
            assert content[media_type]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert model in schemas
    assert "script" in schemas["JobRequest"]["properties"]
    bulk = ops[("POST", "/api/v1/jobs/bulk")]["requestBody"]["content"]["application/json"]
    assert {"$ref": "#/components/schemas/BulkRequest"} in bulk["schema"]["anyOf"]
    upload = ops[("PUT", "/api/v1/jobs/{job_id}/files/{path}")]["requestBody"]["content"]
    assert upload["application/octet-stream"]["schema"]["format"] == "binary"


def test_task_views_have_their_own_schemas(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    schemas = doc["components"]["schemas"]
    answer = ops[("GET", "/ga4gh/tes/v1/tasks/{task_id}")]["responses"]["200"]
    views = answer["content"]["application/json"]["schema"]["anyOf"]
    assert [v["$ref"].rsplit("/", 1)[1] for v in views] == [
        "TesTaskMinimal",
        "TesTaskBasic",
        "TesTask",
    ]
    minimal = schemas["TesTaskMinimal"]
    assert set(minimal["required"]) == {"id", "state"}
    assert minimal["additionalProperties"] is False
    assert "executors" in schemas["TesTask"]["required"]
    basic_input = schemas["TesInputBasic"]["properties"]
    assert "content" not in basic_input and "content" in schemas["Input"]["properties"]
    assert "system_logs" not in schemas["TesTaskLogBasic"]["properties"]
    listed = schemas["TesListTasksResponse"]["properties"]["tasks"]["items"]
    assert listed["anyOf"] == views


def test_the_document_also_builds_without_authentication(tmp_path: Path) -> None:
    doc = create_app(Settings(data_dir=tmp_path, auth=("none",)), dispatch=False).openapi()
    assert all("401" not in op["responses"] for op in operations(doc).values())
