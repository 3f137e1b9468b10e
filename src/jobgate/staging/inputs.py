"""Placing a task's inputs at their container paths.

First each input is looked at, in order (what it is, what a directory holds), then every
file is fetched, in parallel within the mover's limit; the first failure cancels the rest.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import FileType, Input, Job, Output
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir
from jobgate.staging.base import Store
from jobgate.staging.mover import Mover
from jobgate.staging.sandbox import place_sandbox, place_uploads, write_text
from jobgate.staging.stores import Stores
from jobgate.staging.tarball import ExtractLimits
from jobgate.staging.transfer import Budget
from jobgate.staging.urls import safe_relative, scheme_of


@dataclass(frozen=True)
class Fetch:
    store: Store
    rel: str
    dest: Path


def fill(item: Input | Output, kind: FileType) -> bool:
    """Set a missing ``type`` (the server fills it in once known); True if it did."""
    if item.type is None:
        item.type = kind
        return True
    return False


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of an exception group (a TaskGroup's first failure comes first)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def stage_in(
    job: Job,
    taskdir: TaskDir,
    *,
    stores: Stores,
    mover: Mover,
    budget: Budget,
    uploads: Path | None,
    sandboxes_dir: Path | None,
    extract_limits: ExtractLimits | None = None,
    in_place: set[str] | frozenset[str] = frozenset(),
) -> bool:
    """Place every input; returns True if an input's ``type`` was filled in. Inputs whose
    container path is in ``in_place`` are where the task sees them already (a host mount):
    nothing is copied.

    Raises :class:`StagingError` naming the input and the cause.
    """
    filled = False
    limits = extract_limits or ExtractLimits()
    # One stat on the loop (local data dir): most jobs have no uploads and should not
    # pay a thread hop to learn it.
    if uploads is not None and os.path.isdir(uploads):  # noqa: ASYNC240
        await asyncio.to_thread(place_uploads, uploads, taskdir)
    fetches: list[Fetch] = []
    for inp in job.inputs or []:
        if inp.path in in_place:
            continue
        try:
            dest = taskdir.host(inp.path)
        except PathEscape as exc:
            raise StagingError(f"input {inp.path}: {exc}") from exc
        if inp.content is not None:
            await asyncio.to_thread(write_text, dest, inp.content)
            filled |= fill(inp, FileType.FILE)
            continue
        assert inp.url is not None  # the model requires url or content
        if scheme_of(inp.url) == "sandbox":
            filled |= fill(
                inp, await asyncio.to_thread(place_sandbox, sandboxes_dir, inp, dest, limits)
            )
            continue
        store = await stores.open(inp.url, what="input")
        kind, found = await _plan(inp, store, dest, taskdir, mover)
        fetches += found
        filled |= fill(inp, kind)
    try:
        async with asyncio.TaskGroup() as group:
            for f in fetches:
                group.create_task(_fetch(mover, f, budget))
    except BaseExceptionGroup as group_error:
        raise first_error(group_error) from None
    return filled


async def _fetch(mover: Mover, f: Fetch, budget: Budget) -> int:
    return await mover.transfer(
        "input", f.store, f.rel, lambda: f.store.download(f.rel, f.dest, budget)
    )


async def _plan(
    inp: Input, store: Store, dest: Path, taskdir: TaskDir, mover: Mover
) -> tuple[FileType, list[Fetch]]:
    if inp.type == FileType.DIRECTORY and scheme_of(store.url) in ("http", "https"):
        raise StagingError(f"input {store.shown}: directories cannot be fetched over HTTP")
    kind = await mover.attempt("input", store, "", store.kind)
    if inp.type is not None and inp.type != kind:
        actual = "a directory" if kind == FileType.DIRECTORY else "a file"
        raise StagingError(f"input {store.shown}: is {actual} but type is {inp.type}")
    if kind == FileType.FILE:
        return kind, [Fetch(store, "", dest)]
    entries = await mover.attempt("input", store, "", store.listing)
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    fetches = []
    base = inp.path.rstrip("/")
    for entry in entries:
        if not safe_relative(entry.rel):
            raise StagingError(f"input {store.shown}: refused the unsafe name {entry.rel!r}")
        try:
            target = taskdir.host(f"{base}/{entry.rel}")
        except PathEscape as exc:
            raise StagingError(f"input {store.url_of(entry.rel)}: {exc}") from exc
        fetches.append(Fetch(store, entry.rel, target))
    return kind, fetches
