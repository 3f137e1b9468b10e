"""The dashboard in real headless Chromium against a real server: log in, watch jobs live,
follow a log, cancel, and see only what the API's policy allows."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.conftest import Site

LONG_JOB = "echo first-line; sleep 1; echo second-line; sleep 60"


def log_in(page: Any, site: Site, token: str) -> None:
    page.goto(site.url + "/")
    page.fill("#login-token", token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#jobs")).to_be_visible()
    expect(page.locator("body[data-table-ready='1']")).to_have_count(1)


def submit(site: Site, who: str, **job: Any) -> str:
    with site.client(who) as c:
        r = c.post("/jobs", json=job)
        r.raise_for_status()
        return str(r.json()["id"])


def row(page: Any, job_id: str) -> Any:
    return page.locator(f"#jobs-body tr[data-id='{job_id}']")


def expected_401(watch: Any) -> None:
    """A refused login is a 401, which the browser logs: the one network error allowed."""
    assert all("401" in e for e in watch.errors)
    watch.errors.clear()


def test_token_login_sets_a_cookie_scripts_cannot_read(page: Any, site: Site, watch: Any) -> None:
    page.goto(site.url + "/")
    page.fill("#login-token", "jgt_not-a-real-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("unknown")
    expected_401(watch)
    log_in(page, site, site.tokens["alice"])
    expect(page.locator("#who")).to_have_text("token:alice")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["jobgate_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""
    assert site.tokens["alice"] not in page.url
    stored = page.evaluate(
        "JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})"
    )
    assert site.tokens["alice"] not in stored
    # A reload keeps the session.
    page.reload()
    expect(page.locator("#who")).to_have_text("token:alice")


def test_a_job_appears_live_changes_state_logs_follow_and_cancels(
    page: Any, site: Site, screens: Path
) -> None:
    log_in(page, site, site.tokens["alice"])
    job_id = submit(site, "alice", name="dash-live", script=LONG_JOB)
    # No reload: the row comes from the event stream, then turns RUNNING.
    expect(row(page, job_id)).to_be_visible()
    expect(row(page, job_id).locator("td.state .badge")).to_have_text("RUNNING", timeout=20_000)
    expect(page.locator("#counts .chip[data-state='RUNNING'] b")).not_to_have_text("0")
    page.screenshot(path=str(screens / "jobs-live.png"), full_page=True)

    row(page, job_id).locator("a").click()
    expect(page.locator("#job-state .badge")).to_have_text("RUNNING")
    expect(page.locator("#log")).to_contain_text("first-line")
    # The second line is written a second later, while the page is open: it follows.
    expect(page.locator("#log")).to_contain_text("second-line", timeout=10_000)
    expect(page.locator("#history tr")).to_have_count(3)  # QUEUED, INITIALIZING, RUNNING
    expect(page.locator("#history")).to_contain_text("dispatcher")
    expect(page.locator("#spec")).to_contain_text("sleep 60")
    page.screenshot(path=str(screens / "job-running.png"), full_page=True)

    page.click("#cancel")
    expect(page.locator("#job-state .badge")).to_have_text("CANCELED", timeout=20_000)
    expect(page.locator("#history")).to_contain_text("CANCELED")
    expect(page.locator("#cancel")).to_have_count(0)
    expect(page.locator("#reschedule")).to_be_visible()
    page.screenshot(path=str(screens / "job-canceled.png"), full_page=True)
    with site.client("alice") as c:
        assert c.get(f"/jobs/{job_id}").json()["state"] == "CANCELED"

    # Back in the table, the row says so too.
    page.click("text=← all jobs")
    expect(row(page, job_id).locator("td.state .badge")).to_have_text("CANCELED")

    # Rescheduled from its page, it runs again (a second attempt), then is canceled again.
    row(page, job_id).locator("a").click()
    page.click("#reschedule")
    expect(page.locator("#job-state .badge")).to_have_text("RUNNING", timeout=20_000)
    expect(page.locator("#log")).to_contain_text("first-line")
    page.click("#cancel")
    expect(page.locator("#job-state .badge")).to_have_text("CANCELED", timeout=20_000)
    with site.client("alice") as c:
        assert c.get(f"/jobs/{job_id}").json()["reschedules"] == 1


def test_another_users_job_is_absent(page: Any, site: Site) -> None:
    mine = submit(site, "alice", name="dash-mine", script="true", hold=True)
    theirs = submit(site, "bob", name="dash-theirs", script="true", hold=True)
    log_in(page, site, site.tokens["alice"])
    expect(row(page, mine)).to_be_visible()
    expect(row(page, theirs)).to_have_count(0)
    # Bob's job arriving live does not show either, while Alice's does.
    late = submit(site, "bob", name="dash-theirs-later", script="true", hold=True)
    mine_later = submit(site, "alice", name="dash-mine-later", script="true", hold=True)
    expect(row(page, mine_later)).to_be_visible()
    expect(row(page, late)).to_have_count(0)
    expect(page.locator("#jobs-body")).not_to_contain_text("dash-theirs")
    # Counts are Alice's own: the summary under her policy.
    with site.client("alice") as c:
        paused = c.post("/jobs/summary", json={"group_by": ["state"]}).json()["groups"]
    mine_paused = next(g["count"] for g in paused if g["state"] == "PAUSED")
    expect(page.locator("#counts .chip[data-state='PAUSED'] b")).to_have_text(str(mine_paused))


def test_another_users_job_page_is_not_found(context: Any, site: Site, watch: Any) -> None:
    theirs = submit(site, "bob", name="dash-private", script="true", hold=True)
    page = watch.page(context.new_page())
    log_in(page, site, site.tokens["alice"])
    page.goto(f"{site.url}/#/jobs/{theirs}")
    expect(page.locator("h1")).to_have_text("No such job")
    expect(page.locator("main")).not_to_contain_text("dash-private")
    # The API's 404 is the one expected network error of this test.
    watch.errors[:] = [e for e in watch.errors if "404" not in e]


def test_filters_sort_and_keyset_paging(page: Any, site: Site) -> None:
    tag = f"run{time.monotonic_ns()}"
    with site.client("alice") as c:
        jobs = [
            {"name": f"page-{i:03d}", "script": "true", "hold": True, "labels": {"batch": tag}}
            for i in range(60)
        ]
        r = c.post("/jobs/bulk", json={"jobs": jobs})
        r.raise_for_status()
    log_in(page, site, site.tokens["alice"])
    page.fill("#f-label", f"batch={tag}")
    page.click("#filters button[type=submit]")
    expect(page.locator("#jobs-body tr")).to_have_count(50)
    expect(page.locator("#total")).to_have_text("60 jobs")
    expect(page.locator("#jobs-body tr").first).to_contain_text("page-059")
    page.click("#older")
    expect(page.locator("#jobs-body tr")).to_have_count(10)
    expect(page.locator("#jobs-body tr").last).to_contain_text("page-000")
    expect(page.locator("#older")).to_be_disabled()
    page.click("#newer")
    expect(page.locator("#jobs-body tr")).to_have_count(50)
    # Sort by name, ascending (a click on the header toggles the direction).
    page.click("th[data-sort='name']")
    page.click("th[data-sort='name']")
    expect(page.locator("th[data-sort='name']")).to_have_class(re.compile("asc"))
    expect(page.locator("#jobs-body tr").first).to_contain_text("page-000")
    # Name and state filters, kept in the address.
    page.fill("#f-name", "page-05*")
    page.select_option("#f-state", "PAUSED")
    expect(page.locator("#jobs-body tr")).to_have_count(10)
    assert "state=PAUSED" in page.url and "name=page-05" in page.url
    page.fill("#f-owner", "someone-else")
    page.click("#filters button[type=submit]")
    expect(page.locator("#jobs-body")).to_contain_text("No jobs.")


def test_basic_login_overview_plots_and_logout(
    page: Any, site: Site, screens: Path, watch: Any
) -> None:
    job = submit(site, "alice", name="dash-quick", script="echo done")
    with site.client("alice") as c:
        deadline = time.monotonic() + 20
        while c.get(f"/jobs/{job}").json()["state"] != "COMPLETE":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    page.goto(site.url + "/")
    page.fill("#login-user", "carol")
    page.fill("#login-password", "wrong")
    page.click("#basic-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    expected_401(watch)
    page.fill("#login-password", "carol-pw")
    page.click("#basic-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("basic:carol")
    page.context.clear_cookies()
    log_in(page, site, site.admin)  # an admin sees every job, and so the plots have data
    page.click("[data-nav='overview']")
    for chart in ("chart-states", "chart-rate", "chart-wait", "chart-run"):
        expect(page.locator(f"svg#{chart}")).to_be_visible()
    expect(page.locator("svg#chart-rate rect[data-series='submitted']").first).to_be_attached()
    expect(page.locator("svg#chart-run rect").first).to_be_attached()
    expect(page.locator("svg#chart-states path[data-series='COMPLETE']")).to_have_count(1)
    expect(page.locator("#backends tr[data-backend='local']")).to_contain_text("up")
    page.screenshot(path=str(screens / "overview.png"), full_page=True)
    page.click("#logout")
    expect(page.locator("#login-token")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "jobgate_session"]


def test_changes_need_the_sessions_csrf_token(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as web:
        r = web.post("/ui/login", json={"token": site.tokens["alice"]})
        assert r.status_code == 200
        csrf = r.json()["csrf"]
        job_id = submit(site, "alice", name="dash-csrf", script="true", hold=True)
        # Reading with the cookie alone works; changing needs the token as well.
        assert web.get(f"/api/v1/jobs/{job_id}").status_code == 200
        refused = web.post(f"/api/v1/jobs/{job_id}/cancel")
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["where"] == "header.X-CSRF-Token"
        wrong = web.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": "x" * 43})
        assert wrong.status_code == 403
        ok = web.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["state"] == "CANCELED"
        # A login posted from another site is refused.
        foreign = web.post(
            "/ui/login", json={"token": site.tokens["bob"]}, headers={"Origin": "http://evil"}
        )
        assert foreign.status_code == 403
        assert foreign.json()["errors"][0]["where"] == "header.Origin"
        # A forged or foreign cookie is no session.
        web.cookies.set("jobgate_session", "gAAAAAforged")
        assert web.get(f"/api/v1/jobs/{job_id}").status_code == 401


def test_a_revoked_token_ends_its_session(site: Site) -> None:
    with site.client("admin") as admin:
        made = admin.post("/tokens", json={"owner": "erin", "scopes": ["read"]}).json()
    with httpx.Client(base_url=site.url, timeout=30) as web:
        assert web.post("/ui/login", json={"token": made["token"]}).status_code == 200
        assert web.post("/api/v1/jobs/search", json={}).status_code == 403  # no CSRF token
        assert web.get("/api/v1/backends").status_code == 200
        with site.client("admin") as admin:
            admin.delete(f"/tokens/{made['id']}").raise_for_status()
        assert web.get("/api/v1/backends").status_code == 401
        assert web.get("/ui/session").json()["authenticated"] is False
