"""Every route of the app against every kind of caller, with the expected answer.

The routes come from the app's own route table: a new route without an entry in
:data:`MATRIX` fails :func:`test_every_route_has_a_matrix_entry`, so none is forgotten.
Callers: anonymous, another user, the job's owner, an admin, the owner's read-only token.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from jobgate.api.app import create_app
from jobgate.api.security import is_public
from jobgate.config import Settings
from tests.auth.conftest import SUBMIT_GROUP, bearer, make_token
from tests.conftest import TERMINAL, Server

PERSONAS = ("anonymous", "other", "owner", "admin", "readonly")
CD = 'cd "${JOBGATE_TASK_ROOT:-/}" && '
HELD = {"name": "matrix", "script": "true", "hold": True}
TES_TASK = {"name": "matrix", "executors": [{"image": "alpine", "command": ["true"]}]}
WORKSTEP = {"container_image": "alpine", "executable_entrypoint": "true"}


def route_table() -> list[Any]:
    """The app's routes, each with ``methods``, ``path`` and ``endpoint``."""
    app = create_app(Settings(auth=("none",), data_dir=Path("/nonexistent")))
    try:  # FastAPI >= 0.16x keeps included routers lazily
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI: a flat list
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def _methods(route: Any) -> set[str]:
    methods = set(getattr(route, "methods", None) or ())
    if not isinstance(getattr(route, "original_route", route), APIRoute):
        methods.discard("HEAD")  # Starlette adds HEAD to its own GET routes
    return methods


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves."""
    return {(m, r.path) for r in route_table() for m in _methods(r)}


def public_routes() -> set[tuple[str, str]]:
    """Routes that skip authentication: marked @public, or not API routes (the docs)."""
    return {
        (m, r.path)
        for r in route_table()
        if not isinstance(getattr(r, "original_route", r), APIRoute)
        or is_public(getattr(r, "endpoint", None))
        for m in _methods(r)
    }


@dataclass
class World:
    """What the requests act on: made by the owner (alice), fresh where a request changes it."""

    server: Server
    headers: dict[str, dict[str, str]]
    done: dict[str, Any]
    sandbox: str

    def post(self, path: str, body: Any, who: str = "owner") -> httpx.Response:
        return httpx.post(self.server.url + path, json=body, headers=self.headers[who])

    def held(self) -> str:
        r = self.post("/api/v1/jobs", HELD)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def canceled(self) -> str:
        job_id = self.held()
        assert self.post(f"/api/v1/jobs/{job_id}/cancel", None).status_code == 200
        return job_id

    def token_id(self) -> str:
        r = self.post("/api/v1/tokens", {"owner": "zed", "scopes": ["read"]}, "admin")
        assert r.status_code == 201
        return str(r.json()["id"])


Request = tuple[str, str, dict[str, Any]]
Outcome = Callable[[httpx.Response, World], str]


def status(resp: httpx.Response, _w: World) -> str:
    return str(resp.status_code)


def first_item(resp: httpx.Response, _w: World) -> str:
    """A bulk answer: its status and its one item's (``ok`` or the error status)."""
    if resp.status_code != 200:
        return str(resp.status_code)
    err = resp.json()["results"][0].get("error")
    return f"200/{err['status'] if err else 'ok'}"


def sees_done(resp: httpx.Response, w: World) -> str:
    """A listing: does it show the owner's job?"""
    if resp.status_code != 200:
        return str(resp.status_code)
    return "200/" + ("seen" if w.done["id"] in resp.text else "hidden")


def counts_done(resp: httpx.Response, _w: World) -> str:
    if resp.status_code != 200:
        return str(resp.status_code)
    return "200/" + ("seen" if resp.json()["groups"] else "hidden")


@dataclass
class Case:
    request: Callable[[World], Request]
    expect: tuple[str, str, str, str, str]  # anonymous, other, owner, admin, readonly
    outcome: Outcome = status


def _ok(code: str) -> tuple[str, str, str, str, str]:
    """Any authenticated caller: ``code``."""
    return ("401", code, code, code, code)


def _own(code: str) -> tuple[str, str, str, str, str]:
    """Reading the owner's job: others get 404."""
    return ("401", "404", code, code, code)


def _control(code: str) -> tuple[str, str, str, str, str]:
    """Changing the owner's job: others 404, read-only 403."""
    return ("401", "404", code, code, "403")


def _submit(code: str) -> tuple[str, str, str, str, str]:
    return ("401", code, code, code, "403")


BULK = ("401", "200/404", "200/ok", "200/ok", "403")
LISTED = ("401", "200/hidden", "200/seen", "200/seen", "200/seen")
PUBLIC = ("200",) * 5


def admin_only(code: str) -> tuple[str, str, str, str, str]:
    return ("401", "403", "403", code, "403")


def tes_cases(prefix: str) -> dict[tuple[str, str], Case]:
    return {
        ("GET", f"{prefix}/service-info"): Case(
            lambda w: ("GET", f"{prefix}/service-info", {}), PUBLIC
        ),
        ("POST", f"{prefix}/tasks"): Case(
            lambda w: ("POST", f"{prefix}/tasks", {"json": TES_TASK}), _submit("200")
        ),
        ("GET", f"{prefix}/tasks"): Case(
            lambda w: ("GET", f"{prefix}/tasks", {"params": {"name_prefix": w.done["name"]}}),
            LISTED,
            sees_done,
        ),
        ("GET", f"{prefix}/tasks/{{task_id}}"): Case(
            lambda w: ("GET", f"{prefix}/tasks/{w.done['id']}", {}), _own("200")
        ),
        ("POST", f"{prefix}/tasks/{{task_id}}:cancel"): Case(
            lambda w: ("POST", f"{prefix}/tasks/{w.held()}:cancel", {}), _control("200")
        ),
    }


def _job(suffix: str, code: str = "200", *, method: str = "GET", fresh: str = "") -> Case:
    def req(w: World) -> Request:
        job_id = {"held": w.held, "canceled": w.canceled}[fresh]() if fresh else w.done["id"]
        kwargs: dict[str, Any] = {}
        if method == "PATCH":
            kwargs["json"] = {"priority": 1}
        if method == "PUT":
            kwargs["content"] = b"data"
        return (method, f"/api/v1/jobs/{job_id}{suffix}", kwargs)

    expect = _control(code) if fresh else _own(code)
    return Case(req, expect)


def _bulk(action: str, fresh: str, **extra: Any) -> Case:
    def req(w: World) -> Request:
        job_id = w.held() if fresh == "held" else w.canceled()
        return ("POST", f"/api/v1/jobs/{action}", {"json": {"ids": [job_id], **extra}})

    return Case(req, BULK, first_item)


PSIK = "/psik/v1"


def _psik(
    suffix: str, code: str = "200", *, method: str = "GET", fresh: bool = False, **kwargs: Any
) -> Case:
    """A psik_api route on the owner's finished job, or (``fresh``) on a new held one."""

    def req(w: World) -> Request:
        job_id = w.held() if fresh else w.done["id"]
        return (method, f"{PSIK}/jobs/{job_id}{suffix}", kwargs)

    return Case(req, _control(code) if fresh else _own(code))


def _psik_uploaded(w: World) -> Request:
    job_id = w.held()
    r = httpx.put(
        f"{w.server.url}{PSIK}/jobs/{job_id}/files/a.txt", content=b"a", headers=w.headers["owner"]
    )
    assert r.status_code == 200, r.text
    return ("GET", f"{PSIK}/jobs/{job_id}/files/a.txt", {})


PSIK_JOB = {"name": "matrix", "script": "true"}
PSIK_CASES: dict[tuple[str, str], Case] = {
    **{
        (m, f"{PSIK}{p}"): c
        for p in ("/jobs", "/jobs/")
        for m, c in (
            ("GET", Case(lambda w, p=p: ("GET", f"{PSIK}{p}", {}), LISTED, sees_done)),
            (
                "POST",
                Case(lambda w, p=p: ("POST", f"{PSIK}{p}", {"json": PSIK_JOB}), _submit("200")),
            ),
        )
    },
    **{
        ("GET", f"{PSIK}{p}"): Case(lambda w, p=p: ("GET", f"{PSIK}{p}", {}), _ok("200"))
        for p in ("/backends", "/backends/")
    },
    ("GET", f"{PSIK}/backends/{{name}}"): Case(
        lambda w: ("GET", f"{PSIK}/backends/default", {}), _ok("200")
    ),
    ("POST", f"{PSIK}/jobs/new"): Case(
        lambda w: ("POST", f"{PSIK}/jobs/new", {"json": PSIK_JOB}), _submit("200")
    ),
    ("GET", f"{PSIK}/jobs/{{jobid}}"): _psik(""),
    ("GET", f"{PSIK}/jobs/{{jobid}}/state"): _psik("/state"),
    **{
        ("GET", f"{PSIK}/jobs/{{jobid}}{s}"): _psik(s)
        for s in ("/logs", "/logs/", "/scripts", "/scripts/", "/files", "/files/")
    },
    ("DELETE", f"{PSIK}/jobs/{{jobid}}"): _psik("", method="DELETE", fresh=True),
    ("POST", f"{PSIK}/jobs/{{jobid}}/start"): _psik("/start", method="POST", fresh=True),
    **{
        ("POST", f"{PSIK}/jobs/{{jobid}}{s}"): _psik(
            s, method="POST", fresh=True, files=[("files", ("in.txt", b"data"))]
        )
        for s in ("/files", "/files/")
    },
    ("PUT", f"{PSIK}/jobs/{{jobid}}/files/{{fname:path}}"): _psik(
        "/files/in.txt", method="PUT", fresh=True, content=b"data"
    ),
    ("GET", f"{PSIK}/jobs/{{jobid}}/files/{{fname:path}}"): Case(_psik_uploaded, _own("200")),
}
"""The psik_api-compatible routes (JOBGATE_PSIK_PREFIX)."""


MATRIX: dict[tuple[str, str], Case] = {
    **{
        ("GET", p): Case(lambda w, p=p: ("GET", p, {}), PUBLIC)
        for p in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/healthz")
    },
    ("GET", "/v1/tasks/service-info"): Case(
        lambda w: ("GET", "/v1/tasks/service-info", {}),
        PUBLIC,
    ),
    **tes_cases("/ga4gh/tes/v1"),
    **tes_cases("/v1"),
    # native API: submission
    ("POST", "/api/v1/jobs"): Case(
        lambda w: ("POST", "/api/v1/jobs", {"json": HELD}), _submit("201")
    ),
    ("POST", "/api/v1/jobs/bulk"): Case(
        lambda w: ("POST", "/api/v1/jobs/bulk", {"json": {"jobs": [HELD]}}), _submit("200")
    ),
    ("POST", "/api/v1/jobs/parametric"): Case(
        lambda w: (
            "POST",
            "/api/v1/jobs/parametric",
            {"json": {"job": HELD, "parameters": {"i": [1]}}},
        ),
        _submit("200"),
    ),
    # native API: reading and listing
    ("GET", "/api/v1/backends"): Case(lambda w: ("GET", "/api/v1/backends", {}), _ok("200")),
    ("POST", "/api/v1/jobs/search"): Case(
        lambda w: (
            "POST",
            "/api/v1/jobs/search",
            {"json": {"filters": [{"field": "id", "op": "eq", "value": w.done["id"]}]}},
        ),
        LISTED,
        sees_done,
    ),
    ("POST", "/api/v1/jobs/summary"): Case(
        lambda w: (
            "POST",
            "/api/v1/jobs/summary",
            {
                "json": {
                    "group_by": ["state"],
                    "filters": [{"field": "id", "op": "eq", "value": w.done["id"]}],
                }
            },
        ),
        LISTED,
        counts_done,
    ),
    ("GET", "/api/v1/jobs/{job_id}"): _job(""),
    ("GET", "/api/v1/jobs/{job_id}/events"): _job("/events"),
    ("GET", "/api/v1/jobs/{job_id}/events/stream"): _job("/events/stream"),
    ("GET", "/api/v1/jobs/{job_id}/logs"): _job("/logs"),
    ("GET", "/api/v1/jobs/{job_id}/files"): _job("/files"),
    ("GET", "/api/v1/jobs/{job_id}/output-sandbox"): _job("/output-sandbox"),
    ("GET", "/api/v1/events/stream"): Case(
        lambda w: ("GET", "/api/v1/events/stream", {}), _ok("200")
    ),
    # native API: control, one job
    ("POST", "/api/v1/jobs/{job_id}/cancel"): _job("/cancel", method="POST", fresh="held"),
    ("POST", "/api/v1/jobs/{job_id}/start"): _job("/start", method="POST", fresh="held"),
    ("POST", "/api/v1/jobs/{job_id}/reschedule"): _job(
        "/reschedule", method="POST", fresh="canceled"
    ),
    ("DELETE", "/api/v1/jobs/{job_id}"): _job("", "204", method="DELETE", fresh="held"),
    ("PATCH", "/api/v1/jobs/{job_id}"): _job("", method="PATCH", fresh="held"),
    ("PUT", "/api/v1/jobs/{job_id}/files/{path:path}"): _job(
        "/files/in/data.txt", "201", method="PUT", fresh="held"
    ),
    # native API: control, many jobs (others' jobs are per-item 404s)
    ("POST", "/api/v1/jobs/cancel"): _bulk("cancel", "held"),
    ("POST", "/api/v1/jobs/start"): _bulk("start", "held"),
    ("POST", "/api/v1/jobs/reschedule"): _bulk("reschedule", "canceled"),
    ("POST", "/api/v1/jobs/delete"): _bulk("delete", "held"),
    ("POST", "/api/v1/jobs/patch"): _bulk("patch", "held", priority=3),
    # sandboxes: content-addressed, readable by any caller who knows the hash
    ("POST", "/api/v1/sandboxes"): Case(
        lambda w: ("POST", "/api/v1/sandboxes", {"content": uuid.uuid4().bytes}), _submit("201")
    ),
    ("GET", "/api/v1/sandboxes/{sha256}"): Case(
        lambda w: ("GET", f"/api/v1/sandboxes/{w.sandbox}", {}), _ok("200")
    ),
    ("HEAD", "/api/v1/sandboxes/{sha256}"): Case(
        lambda w: ("HEAD", f"/api/v1/sandboxes/{w.sandbox}", {}), _ok("200")
    ),
    # SKA SRCNet worksteps
    ("POST", "/v1/worksteps"): Case(
        lambda w: ("POST", "/v1/worksteps", {"json": WORKSTEP}), _submit("200")
    ),
    ("GET", "/v1/worksteps/{workstep_id}"): Case(
        lambda w: ("GET", f"/v1/worksteps/{w.done['id']}", {}), _own("200")
    ),
    # identity and service tokens
    ("GET", "/api/v1/me"): Case(lambda w: ("GET", "/api/v1/me", {}), _ok("200")),
    ("POST", "/api/v1/tokens"): Case(
        lambda w: ("POST", "/api/v1/tokens", {"json": {"owner": "zed", "scopes": ["read"]}}),
        admin_only("201"),
    ),
    ("GET", "/api/v1/tokens"): Case(lambda w: ("GET", "/api/v1/tokens", {}), admin_only("200")),
    ("DELETE", "/api/v1/tokens/{token_id}"): Case(
        lambda w: ("DELETE", f"/api/v1/tokens/{w.token_id()}", {}), admin_only("200")
    ),
    # the web dashboard: its page, files and sign-in are public; its data is not
    ("GET", "/"): Case(lambda w: ("GET", "/", {}), PUBLIC),
    ("GET", "/ui/static/{name}"): Case(lambda w: ("GET", "/ui/static/app.js", {}), PUBLIC),
    ("GET", "/ui/session"): Case(lambda w: ("GET", "/ui/session", {}), PUBLIC),
    ("POST", "/ui/login"): Case(lambda w: ("POST", "/ui/login", {"json": {}}), ("400",) * 5),
    ("POST", "/ui/logout"): Case(lambda w: ("POST", "/ui/logout", {}), ("204",) * 5),
    # OIDC sign-in is not configured for the dashboard on this server
    ("GET", "/ui/oidc/login"): Case(lambda w: ("GET", "/ui/oidc/login", {}), ("404",) * 5),
    ("GET", "/ui/oidc/callback"): Case(lambda w: ("GET", "/ui/oidc/callback", {}), ("404",) * 5),
    ("GET", "/ui/overview"): Case(lambda w: ("GET", "/ui/overview", {}), _ok("200")),
    # operator docs are public; /metrics is open to loopback clients (the matrix's own),
    # token-only elsewhere (tests/observability)
    **{
        ("GET", p): Case(lambda w, p=p: ("GET", p, {}), PUBLIC)
        for p in ("/v1/www/docs/oper", "/v1/www/docs/oper/rapidoc-min.js", "/metrics")
    },
    **PSIK_CASES,
    # job lifecycle: validate without creating (the submit scope)
    **{
        ("POST", f"{p}/tasks:validate"): Case(
            lambda w, p=p: ("POST", f"{p}/tasks:validate", {"json": TES_TASK}), _submit("200")
        )
        for p in ("/ga4gh/tes/v1", "/v1")
    },
    ("PATCH", "/api/v1/jobs/{job_id}/heartbeat"): _job(
        "/heartbeat", "204", method="PATCH", fresh="held"
    ),
    ("POST", "/api/v1/jobs/validate"): Case(
        lambda w: ("POST", "/api/v1/jobs/validate", {"json": HELD}), _submit("200")
    ),
}


# -- DiracX jobs router: JobIDs are integers; the helpers find them by job name ---------


def _dx_seq(w: World, name: str) -> int:
    spec = {"parameter": "JobName", "operator": "eq", "value": name}
    r = w.post("/api/jobs/search", {"search": [spec], "parameters": ["JobID"]}, "admin")
    assert r.status_code == 200 and len(r.json()) == 1, r.text
    return int(r.json()[0]["JobID"])


def _dx_job(w: World, fresh: str = "") -> int:
    """The owner's finished job, or a fresh ``held`` or ``canceled`` one."""
    if not fresh:
        return _dx_seq(w, w.done["name"])
    name = f"matrix-dx-{uuid.uuid4().hex[:8]}"
    r = w.post("/api/v1/jobs", {**HELD, "name": name})
    assert r.status_code == 201, r.text
    if fresh == "canceled":
        assert w.post(f"/api/v1/jobs/{r.json()['id']}/cancel", None).status_code == 200
    return _dx_seq(w, name)


def _dx_pfn(w: World) -> str:
    return f"SB:jobgate|/S3/sandboxes/sha256:{w.sandbox}.tar.gz"


def _dx_upload(w: World) -> Request:
    content = uuid.uuid4().bytes
    info = {
        "checksum_algorithm": "sha256",
        "checksum": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "format": "tar.zst",
    }
    r = w.post("/api/jobs/sandbox", info)
    assert r.status_code == 200 and r.json()["url"], r.text
    return ("POST", httpx.URL(r.json()["url"]).path, {"content": content})


def _dx_download(w: World) -> Request:
    r = httpx.get(
        w.server.url + "/api/jobs/sandbox",
        params={"pfn": _dx_pfn(w)},
        headers=w.headers["owner"],
    )
    assert r.status_code == 200, r.text
    return ("GET", httpx.URL(r.json()["url"]).path, {})


def _dx(method: str, path: str, expect: Any, fresh: str = "", **kw: Any) -> Case:
    """A DiracX route on the owner's job: ``{seq}`` in ``path`` and ``kw`` is its JobID."""

    def req(w: World) -> Request:
        seq = _dx_job(w, fresh) if "{seq}" in repr((path, kw)) else 0

        def fill(v: Any) -> Any:
            if isinstance(v, str):
                return int(seq) if v == "{seq}" else v.replace("{seq}", str(seq))
            if isinstance(v, dict):
                return {fill(k): fill(x) for k, x in v.items()}
            if isinstance(v, list):
                return [fill(x) for x in v]
            return v

        return (method, fill(path), fill(kw))

    return Case(req, expect)


def dx_seen(resp: httpx.Response, w: World) -> str:
    if resp.status_code != 200:
        return str(resp.status_code)
    return "200/" + ("seen" if resp.json() else "hidden")


def _dx_listing(path: str, body: dict[str, Any]) -> Case:
    def req(w: World) -> Request:
        spec = {"parameter": "JobName", "operator": "eq", "value": w.done["name"]}
        return ("POST", path, {"json": {**body, "search": [spec]}})

    return Case(req, LISTED, dx_seen)


STAMP = "2026-01-01T00:00:00Z"
DIRACX: dict[tuple[str, str], Case] = {
    ("POST", "/api/jobs/jdl"): Case(
        lambda w: ("POST", "/api/jobs/jdl", {"json": ['Executable = "true";']}), _submit("201")
    ),
    ("POST", "/api/jobs/search"): _dx_listing("/api/jobs/search", {}),
    ("POST", "/api/jobs/summary"): _dx_listing("/api/jobs/summary", {"grouping": ["Status"]}),
    ("PATCH", "/api/jobs/status"): _dx(
        "PATCH",
        "/api/jobs/status",
        _control("200"),
        "held",
        json={"{seq}": {STAMP: {"Status": "Killed"}}},
    ),
    ("PATCH", "/api/jobs/heartbeat"): _dx(
        "PATCH", "/api/jobs/heartbeat", _control("200"), json={"{seq}": {"LoadAverage": 1.0}}
    ),
    ("POST", "/api/jobs/reschedule"): _dx(
        "POST", "/api/jobs/reschedule", _control("200"), "canceled", json={"job_ids": ["{seq}"]}
    ),
    ("PATCH", "/api/jobs/metadata"): _dx(
        "PATCH", "/api/jobs/metadata", _control("204"), "held", json={"{seq}": {"Site": "X"}}
    ),
    ("DELETE", "/api/jobs/"): _dx(
        "DELETE", "/api/jobs/", _control("200"), "held", params={"job_ids": ["{seq}"]}
    ),
    ("POST", "/api/jobs/kill"): _dx(
        "POST", "/api/jobs/kill", _control("200"), "held", params={"job_ids": ["{seq}"]}
    ),
    ("POST", "/api/jobs/sandbox"): Case(
        lambda w: (
            "POST",
            "/api/jobs/sandbox",
            {
                "json": {
                    "checksum_algorithm": "sha256",
                    "checksum": "0" * 64,
                    "size": 1,
                    "format": "tar.zst",
                }
            },
        ),
        _submit("200"),
    ),
    # Signed URLs: the token in the path is the credential, as with presigned S3 URLs.
    ("POST", "/api/jobs/sandbox/upload/{token}"): Case(_dx_upload, ("204",) * 5),
    ("GET", "/api/jobs/sandbox/download/{token}"): Case(_dx_download, ("200",) * 5),
    ("GET", "/api/jobs/sandbox"): Case(
        lambda w: ("GET", "/api/jobs/sandbox", {"params": {"pfn": _dx_pfn(w)}}), _ok("200")
    ),
    ("POST", "/api/jobs/sandbox/unassign"): _dx(
        "POST", "/api/jobs/sandbox/unassign", _control("204"), "held", json={"job_ids": ["{seq}"]}
    ),
    ("GET", "/api/jobs/{job_id}/sandbox"): _dx("GET", "/api/jobs/{seq}/sandbox", _own("200")),
    ("GET", "/api/jobs/{job_id}/sandbox/{sandbox_type}"): _dx(
        "GET", "/api/jobs/{seq}/sandbox/output", _own("200")
    ),
    ("PATCH", "/api/jobs/{job_id}/sandbox/output"): Case(
        lambda w: (
            "PATCH",
            f"/api/jobs/{_dx_job(w, 'held')}/sandbox/output",
            {"json": _dx_pfn(w)},
        ),
        _control("200"),
    ),
    ("DELETE", "/api/jobs/{job_id}/sandbox"): _dx(
        "DELETE", "/api/jobs/{seq}/sandbox", _control("200"), "held"
    ),
    # what DiracX's client reads before any call; jobgate issues no tokens
    ("GET", "/.well-known/openid-configuration"): Case(
        lambda w: ("GET", "/.well-known/openid-configuration", {}), PUBLIC
    ),
    ("GET", "/.well-known/dirac-metadata"): Case(
        lambda w: ("GET", "/.well-known/dirac-metadata", {}), PUBLIC
    ),
    ("POST", "/api/auth/token"): Case(lambda w: ("POST", "/api/auth/token", {}), ("400",) * 5),
    ("GET", "/api/auth/userinfo"): Case(lambda w: ("GET", "/api/auth/userinfo", {}), _ok("200")),
}
MATRIX.update(DIRACX)


def test_every_route_has_a_matrix_entry() -> None:
    routes = app_routes()
    assert routes - set(MATRIX) == set(), "routes without a matrix entry"
    assert set(MATRIX) - routes == set(), "matrix entries for routes that do not exist"


def test_only_health_service_info_docs_metrics_and_the_dashboard_page_are_public() -> None:
    public = {k for k, case in MATRIX.items() if case.expect[0] != "401"}
    assert public == public_routes()
    assert {p for _m, p in public} == {
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/healthz",
        "/ga4gh/tes/v1/service-info",
        "/v1/service-info",
        "/v1/tasks/service-info",
        "/",
        "/ui/static/{name}",
        "/ui/session",
        "/ui/login",
        "/ui/logout",
        "/ui/oidc/login",
        "/ui/oidc/callback",
        "/v1/www/docs/oper",
        "/v1/www/docs/oper/rapidoc-min.js",
        "/metrics",
        "/.well-known/openid-configuration",
        "/.well-known/dirac-metadata",
        "/api/auth/token",
        "/api/jobs/sandbox/upload/{token}",
        "/api/jobs/sandbox/download/{token}",
    }


@pytest.fixture(scope="module")
def world(auth_server: Server, admin_token: str) -> Iterator[World]:
    def token(owner: str, *scopes: str) -> dict[str, str]:
        return bearer(make_token(auth_server, admin_token, owner, *scopes, groups=[SUBMIT_GROUP]))

    headers = {
        "anonymous": {},
        "other": token("bob"),
        "owner": token("alice"),
        "admin": bearer(admin_token),
        "readonly": token("alice", "read"),
    }
    name = f"matrix-done-{uuid.uuid4().hex[:8]}"
    job = {
        "name": name,
        "script": CD + "mkdir -p out && echo hi > out/a.txt",
        "output_sandbox": ["/out/*.txt"],
    }
    r = httpx.post(auth_server.url + "/api/v1/jobs", json=job, headers=headers["owner"])
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while True:
        done = httpx.get(f"{auth_server.url}/api/v1/jobs/{job_id}", headers=headers["owner"])
        if done.json()["state"] in TERMINAL:
            break
        assert time.monotonic() < deadline, done.text
        time.sleep(0.1)
    assert done.json()["state"] == "COMPLETE", done.text
    up = httpx.post(
        auth_server.url + "/api/v1/sandboxes", content=b"shared input", headers=headers["owner"]
    )
    assert up.status_code in (200, 201), up.text
    yield World(auth_server, headers, done.json(), up.json()["sha256"])


def send(w: World, req: Request, who: str) -> httpx.Response:
    method, path, kwargs = req
    with httpx.Client(base_url=w.server.url, timeout=30) as client:
        if path.endswith("/events/stream") and "/jobs/" not in path:
            # Endless: the status is all there is to check.
            with client.stream(method, path, headers=w.headers[who], **kwargs) as resp:
                if resp.status_code >= 400:
                    resp.read()
                return resp
        return client.request(method, path, headers=w.headers[who], **kwargs)


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_matrix(world: World, route: tuple[str, str]) -> None:
    case = MATRIX[route]
    got = {}
    for who in PERSONAS:
        resp = send(world, case.request(world), who)
        got[who] = case.outcome(resp, world)
        if resp.status_code >= 400 and route[0] != "HEAD":
            body = resp.json()
            assert {"code", "status", "message"} <= set(body), body
    assert got == dict(zip(PERSONAS, case.expect, strict=True))
