"""The OpenAPI document tells clients (and /docs' "Authorize") how to authenticate."""

from __future__ import annotations

from pathlib import Path

from jobgate.api.app import create_app
from jobgate.config import Settings


def test_every_route_but_the_public_ones_requires_a_configured_scheme(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("")
    settings = Settings(
        data_dir=tmp_path,
        auth=("token", "oidc", "basic"),
        oidc_issuers=("https://issuer.example",),
        oidc_audience="jobgate",
        basic_users_file=users,
    )
    doc = create_app(settings, dispatch=False).openapi()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and "OIDC" in schemes["bearer"]["description"]
    assert schemes["basic"] == {"type": "http", "scheme": "basic"}
    both = [{"bearer": []}, {"basic": []}]
    ops = {(path, m): op for path, item in doc["paths"].items() for m, op in item.items()}
    assert ops[("/api/v1/jobs", "post")]["security"] == both
    assert ops[("/ga4gh/tes/v1/tasks", "get")]["security"] == both
    assert ops[("/healthz", "get")]["security"] == []
    assert ops[("/ga4gh/tes/v1/service-info", "get")]["security"] == []
    assert all("security" in op for op in ops.values())


def test_without_authentication_the_document_names_no_scheme(tmp_path: Path) -> None:
    doc = create_app(Settings(data_dir=tmp_path, auth=("none",)), dispatch=False).openapi()
    assert "securitySchemes" not in doc.get("components", {})
