"""Fixtures of the dashboard tests: one real server and one headless Chromium per module.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright's Python package;
without it the tests skip. Screenshots go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def add_basic_user(path: Path, name: str, password: str, *groups: str) -> None:
    args = [sys.executable, "-m", "jobgate", "user", "set", str(path), name, "--password-stdin"]
    for g in groups:
        args += ["--group", g]
    subprocess.run(args, input=password + "\n", text=True, check=True, capture_output=True)


@dataclass
class Site:
    """The server and the credentials of its people."""

    server: Server
    admin: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, who: str) -> httpx.Client:
        token = self.admin if who == "admin" else self.tokens[who]
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    # The process runtime's executors reach their task directory by host path.
    parent = Path(tempfile.mkdtemp(prefix="jobgate-dashboard-"))
    os.chmod(parent, 0o711)
    users = tmp_path_factory.mktemp("dashboard-users") / "users"
    add_basic_user(users, "carol", "carol-pw")
    srv = Server(
        parent / "data",
        {
            "JOBGATE_AUTH": "token,basic",
            "JOBGATE_BASIC_USERS_FILE": str(users),
            "JOBGATE_RUNTIME": "process",
            "JOBGATE_SSE_HEARTBEAT": "1",
        },
    ).start()
    admin = (srv.data_dir / "admin-token").read_text().strip()
    s = Site(srv, admin)
    with s.client("admin") as c:
        for who in ("alice", "bob"):
            r = c.post("/tokens", json={"owner": who, "scopes": ["submit"]})
            r.raise_for_status()
            s.tokens[who] = r.json()["token"]
    yield s
    srv.stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (make system-deps: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def screens(request: pytest.FixtureRequest) -> Path:
    """Where screenshots are kept for people to look at (git ignores ``test-artifacts/``)."""
    path = Path(request.config.rootpath) / "test-artifacts" / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Watch:
    """What a page did that it should not: console errors, page errors, foreign requests."""

    def __init__(self, origin: str) -> None:
        self.origins = [origin]
        """Where the page may send requests (a test adds its OIDC provider)."""
        self.errors: list[str] = []
        self.foreign: list[str] = []

    def attach(self, context: Any) -> None:
        def route(r: Any) -> None:
            if any(r.request.url.startswith(o + "/") for o in self.origins):
                r.continue_()
            else:
                self.foreign.append(r.request.url)
                r.abort()

        context.route("**/*", route)

    def page(self, page: Any) -> Any:
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        return page


@pytest.fixture()
def watch(site: Site) -> Iterator[Watch]:
    w = Watch(site.url)
    yield w
    assert w.foreign == [], "the page made requests to other origins"
    assert w.errors == [], "the page logged errors"


@pytest.fixture()
def context(browser: Any, watch: Watch) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, service_workers="block")
    watch.attach(ctx)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture()
def page(context: Any, watch: Watch) -> Any:
    return watch.page(context.new_page())
