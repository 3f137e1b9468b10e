"""People sign in to the dashboard at an OIDC provider (authorization code + PKCE), in
real Chromium, and then see what the API's policy shows their OIDC identity."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.auth.issuer import Issuer
from tests.conftest import Server
from tests.dashboard.conftest import Site


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    yield iss
    iss.close()


@pytest.fixture(scope="module")
def site(issuer: Issuer) -> Iterator[Site]:
    parent = Path(tempfile.mkdtemp(prefix="jobgate-dashboard-oidc-"))
    os.chmod(parent, 0o711)
    srv = Server(
        parent / "data",
        {
            "JOBGATE_AUTH": "oidc,token",
            "JOBGATE_OIDC_ISSUERS": f"idp={issuer.url}",
            "JOBGATE_OIDC_AUDIENCE": "jobgate",
            "JOBGATE_OIDC_JWKS_MIN_REFRESH": "0",
            "JOBGATE_DASHBOARD_OIDC_CLIENT_ID": Issuer.CLIENT_ID,
            "JOBGATE_RUNTIME": "process",
        },
    ).start()
    admin = (srv.data_dir / "admin-token").read_text().strip()
    tokens = {who: issuer.token(who, lifetime=3600) for who in ("alice", "bob")}
    yield Site(srv, admin, tokens)
    srv.stop()
    shutil.rmtree(parent, ignore_errors=True)


def test_a_person_signs_in_with_oidc_and_sees_only_their_jobs(
    page: Any, site: Site, issuer: Issuer, watch: Any, screens: Path
) -> None:
    watch.origins.append(issuer.url)
    with site.client("alice") as c:
        mine = c.post("/jobs", json={"name": "oidc-mine", "script": "true", "hold": True})
    with site.client("bob") as c:
        theirs = c.post("/jobs", json={"name": "oidc-theirs", "script": "true", "hold": True})
    issuer.login_as = "alice"
    page.goto(site.url + "/")
    page.click("#oidc-login")
    expect(page.locator("#who")).to_have_text("idp:alice")
    expect(page.locator(f"#jobs-body tr[data-id='{mine.json()['id']}']")).to_be_visible()
    expect(page.locator(f"#jobs-body tr[data-id='{theirs.json()['id']}']")).to_have_count(0)
    session = next(c for c in page.context.cookies() if c["name"] == "jobgate_session")
    assert session["httpOnly"]
    assert "code=" not in page.url and "access_token" not in page.url
    page.screenshot(path=str(screens / "oidc-signed-in.png"), full_page=True)


def test_the_flow_refuses_a_callback_it_did_not_start(site: Site, issuer: Issuer) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as web:
        start = web.get("/ui/oidc/login")
        assert start.status_code == 302
        target = httpx.URL(start.headers["location"])
        assert str(target).startswith(issuer.url + "/authorize")
        assert target.params["code_challenge_method"] == "S256"
        assert target.params["redirect_uri"] == site.url + "/ui/oidc/callback"
        back = httpx.get(str(target))
        code = httpx.URL(back.headers["location"]).params["code"]
        # Another state than the one this browser was given: no session.
        forged = web.get("/ui/oidc/callback", params={"code": code, "state": "forged"})
        assert forged.status_code == 400 and "state" in forged.text
        assert "jobgate_session" not in web.cookies
    # Without the flow's cookie (another browser) the code is useless too.
    with httpx.Client(base_url=site.url, timeout=30) as other:
        state = target.params["state"]
        alone = other.get("/ui/oidc/callback", params={"code": code, "state": state})
        assert alone.status_code == 400
        assert "jobgate_session" not in other.cookies
