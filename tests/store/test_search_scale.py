"""Search and list paths taken at scale (index ranges, bounded scans, tag-driven pages) give
the same jobs, in the same order, as the plain ones: on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.domain.models import new_job_id
from jobgate.domain.query import SearchRequest
from jobgate.store import jobs as jobs_store
from jobgate.store import search as search_store
from jobgate.store.jobs import JobStore, ListQuery, NewJob

NAMES = ["Alpha-1", "alpha-2", "ALPHA-3x", "alphabet", "beta-alpha", "al", "Äpfel-alpha", None]


async def _corpus(engine: AsyncEngine, n: int = 60) -> tuple[JobStore, list[dict[str, Any]]]:
    """``n`` jobs (oldest first) with the names above in turn and a few tags."""
    store = JobStore(engine)
    made, batch = [], []
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        tags = {"color": ["red", "blue"][i % 2], "size": ["s", "m", "l"][i % 3]}
        spec: dict[str, Any] = {"executors": [{"image": "a", "command": ["true"]}], "tags": tags}
        if name is not None:
            spec["name"] = name
        batch.append(NewJob(id=new_job_id(), spec=spec, backend="local"))
        made.append({"id": batch[-1].id, "name": name, "tags": tags})
    await store.create(batch)  # seqs in list order
    return store, made


def _like(pattern: str) -> re.Pattern[str]:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rx, re.IGNORECASE | re.DOTALL)


async def _all_pages(store: JobStore, body: dict[str, Any]) -> tuple[list[str], int]:
    """Every id a search returns, following cursors; and how many pages it took."""
    out: list[str] = []
    cursor, pages = None, 0
    while True:
        req = SearchRequest.model_validate({**body, **({"cursor": cursor} if cursor else {})})
        items, cursor = await search_store.search(store.db, req, ("id", "name"))
        out += [i["id"] for i in items]
        pages += 1
        if cursor is None:
            return out, pages
        assert pages < 200


def _ascii_match(pattern: str, name: str | None) -> bool:
    # SQLite folds the case of A-Z only; the corpus' non-ASCII name has no case variant in
    # the patterns below, so both databases agree with this.
    return name is not None and _like(pattern).fullmatch(name) is not None


@pytest.mark.parametrize("probe", [0, 1_000])  # the range not taken / taken (SQLite)
@pytest.mark.parametrize("pattern", ["alpha*", "ALPHA-?", "alpha-3X", "Al*", "zz*"])
async def test_name_prefix_like_finds_the_same_jobs_newest_first(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, probe: int, pattern: str
) -> None:
    monkeypatch.setattr(search_store, "NAME_PROBE", probe)
    store, made = await _corpus(engine)
    want = [j["id"] for j in reversed(made) if _ascii_match(pattern, j["name"])]
    got, _ = await _all_pages(
        store, {"filters": [{"field": "name", "op": "like", "value": pattern}], "limit": 7}
    )
    assert got == want


@pytest.mark.parametrize("direction", ["desc", "asc"])
@pytest.mark.parametrize("pattern", ["*alpha*", "*-?", "?lpha*", "*APFEL*"])
async def test_substring_like_pages_cover_every_match_in_order(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, direction: str, pattern: str
) -> None:
    """With a window smaller than the table, pages may come short but none is lost."""
    monkeypatch.setattr(search_store, "SCAN_WINDOW", 9)
    store, made = await _corpus(engine)
    order = reversed(made) if direction == "desc" else iter(made)
    want = [j["id"] for j in order if _ascii_match(pattern, j["name"])]
    body = {
        "filters": [{"field": "name", "op": "like", "value": pattern}],
        "sort": [{"field": "created_at", "direction": direction}],
        "limit": 4,
    }
    got, _ = await _all_pages(store, body)
    assert got == want


async def test_a_label_substring_is_a_bounded_scan_on_every_database(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_store, "SCAN_WINDOW", 10)
    store, made = await _corpus(engine)
    body = {"filters": [{"field": "labels.color", "op": "like", "value": "*E*"}], "limit": 50}
    got, pages = await _all_pages(store, body)
    assert got == [j["id"] for j in reversed(made) if "e" in j["tags"]["color"]]
    assert pages >= len(made) // 10  # one window of 10 seqs per page at most


@pytest.mark.parametrize("probe", [0, 1_000])  # the driving tag: the first / the rarest
@pytest.mark.parametrize(
    "tags",
    [
        {"color": "red"},
        {"color": "blue", "size": "m"},
        {"size": "l", "color": "red"},
        {"color": "red", "size": ""},
        {"size": ""},
        {"color": "green"},
    ],
)
async def test_tes_tag_filters_page_newest_first(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, probe: int, tags: dict[str, str]
) -> None:
    monkeypatch.setattr(jobs_store, "TAG_PROBE", probe)
    store, made = await _corpus(engine)
    want = [
        j["id"]
        for j in reversed(made)
        if all(k in j["tags"] and v in ("", j["tags"][k]) for k, v in tags.items())
    ]
    got: list[str] = []
    before = None
    while True:
        page, before = await store.page(ListQuery(tags=tags, limit=4, before_seq=before))
        got += [r.id for r in page]
        if before is None:
            break
    assert got == want


@pytest.mark.parametrize("prefix", ["alpha", "Alpha-", "ALPHA-3x", "Ä", "zz"])
@pytest.mark.parametrize("tags", [{}, {"color": "red"}])  # the range / a tag drives
async def test_tes_name_prefix_is_case_sensitive_and_pages_newest_first(
    engine: AsyncEngine, prefix: str, tags: dict[str, str]
) -> None:
    store, made = await _corpus(engine)
    want = [
        j["id"]
        for j in reversed(made)
        if (j["name"] or "").startswith(prefix) and all(j["tags"][k] == v for k, v in tags.items())
    ]
    got: list[str] = []
    before = None
    while True:
        query = ListQuery(name_prefix=prefix, tags=tags, limit=3, before_seq=before)
        page, before = await store.page(query)
        got += [r.id for r in page]
        if before is None:
            break
    assert got == want
