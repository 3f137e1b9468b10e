"""The blocking client: ``with Client() as jg: jg.wait(jg.submit("script: echo hi").id)``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

import httpx

from jobgate.client import calls
from jobgate.client.calls import (
    Call,
    FilterInput,
    JobInput,
    ParamInput,
    SortInput,
    Stream,
    View,
)
from jobgate.client.config import resolve
from jobgate.client.errors import connection_failed, from_response
from jobgate.client.models import BulkResult, Event, Job, SearchPage
from jobgate.domain.models import TaskSpec
from jobgate.domain.native import JobRequest
from jobgate.domain.states import State

T = TypeVar("T")


class Client:
    """A client for one jobgate server (native API and GA4GH TES).

    ``url`` and ``token`` (or ``user``/``password`` for HTTP basic) default to
    ``JOBGATE_URL``/``JOBGATE_TOKEN``/``JOBGATE_USER``/``JOBGATE_PASSWORD``, then the config
    file (see :mod:`jobgate.client.config`); ``url`` may be ``unix:///path`` (a server's
    ``--uds`` socket), and ``cert``/``key`` a client certificate for mutual TLS
    (``JOBGATE_CERT``/``JOBGATE_KEY``). Every method raises a
    :class:`~jobgate.client.errors.JobgateClientError` subclass on failure: ``NotFound``,
    ``InvalidRequest`` (with ``.errors``), ``Conflict``, ``ConnectionFailed``, …

    Submissions carry an ``Idempotency-Key`` (a fresh UUID unless given), so the client
    resends them after connection errors, 409 (first try still running) and 5xx answers,
    up to ``retries`` times with exponential backoff: the server runs each at most once.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.25,
        config_path: Path | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        cfg = resolve(
            url, token, user=user, password=password, path=config_path, cert=cert, key=key
        )
        self.url = cfg.url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        transport = None if cfg.uds is None else httpx.HTTPTransport(uds=cfg.uds)
        self._http = httpx.Client(
            headers=cfg.headers(), timeout=timeout, transport=transport, **cfg.httpx_options()
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _bulk(self, parts: list[Call[BulkResult]]) -> BulkResult:
        """Run split bulk calls in order; their per-item results concatenate."""
        out = BulkResult()
        for part in parts:
            result: BulkResult = self._run(part)
            out.extend(result)
        return out

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                resp = self._http.request(
                    call.method,
                    call.path,
                    content=call.content,
                    params=call.params,
                    headers=call.headers,
                )
            except httpx.TransportError as exc:
                if not call.retry or attempt >= self.retries:
                    raise connection_failed(self.url, exc) from exc
            else:
                if not (call.retry and attempt < self.retries and calls.retryable(resp)):
                    return call.finish(resp)
            time.sleep(calls.backoff(attempt, self.backoff))
            attempt += 1

    # -- submission --------------------------------------------------------------------

    def submit(self, job: JobInput, *, idempotency_key: str | None = None) -> Job:
        """Submit one job: a :class:`JobRequest`, a dict, or YAML/JSON text.

        The job is committed when this returns. A retry with the same ``idempotency_key``
        returns the first job instead of creating another.
        """
        return self._run(calls.submit(job, idempotency_key))

    def submit_bulk(
        self, jobs: Sequence[JobInput], *, idempotency_key: str | None = None
    ) -> BulkResult:
        """Submit many jobs in one transaction; one result per input, invalid ones carry errors."""
        return self._run(calls.submit_bulk(jobs, idempotency_key))

    def submit_parametric(
        self,
        job: JobRequest | Mapping[str, Any],
        parameters: Mapping[str, ParamInput],
        *,
        idempotency_key: str | None = None,
    ) -> BulkResult:
        """One job per combination of ``parameters`` (``{"i": range(10), "s": ["a", "b"]}``).

        ``{{ i }}`` in any string of ``job`` is replaced; the result's ``.group`` is the
        sweep's shared group id, and each job gets ``param.<name>`` labels.
        """
        return self._run(calls.submit_parametric(job, parameters, idempotency_key))

    # -- reading -----------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self._run(calls.get(job_id))

    def events(self, job_id: str) -> list[Event]:
        """The job's status history, oldest first."""
        return self._run(calls.events(job_id))

    def search(
        self,
        filters: Iterable[FilterInput] | None = None,
        *,
        sort: Iterable[SortInput] | None = None,
        fields: Sequence[str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage:
        """One page of jobs matching all ``filters`` (e.g. ``[("state", "in", ["QUEUED"])]``).

        Newest first unless ``sort`` says otherwise; pass ``next_cursor`` back for the next
        page, or use :meth:`iter_search`.
        """
        req = calls.search_request(filters, sort, fields, limit, cursor)
        return self._run(calls.search(req))

    def iter_search(
        self,
        filters: Iterable[FilterInput] | None = None,
        *,
        sort: Iterable[SortInput] | None = None,
        fields: Sequence[str] | None = None,
        page_size: int = 500,
        max_items: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every matching job (up to ``max_items``), following cursors page by page."""
        req = calls.search_request(filters, sort, fields, page_size)
        yielded = 0
        while True:
            page = self._run(calls.search(req))
            for row in page.jobs:
                if max_items is not None and yielded >= max_items:
                    return
                yield row
                yielded += 1
            if page.next_cursor is None:
                return
            req = req.model_copy(update={"cursor": page.next_cursor})

    def summary(
        self, group_by: str | Sequence[str], filters: Iterable[FilterInput] | None = None
    ) -> list[dict[str, Any]]:
        """Job counts per group: ``[{"state": "COMPLETE", "count": 3}, …]``."""
        by = group_by.split(",") if isinstance(group_by, str) else group_by
        return self._run(calls.summary(by, filters))

    # -- control -----------------------------------------------------------------------

    def cancel(self, job_id: str) -> State:
        """Cancel a job in any state (a finished one is left as it is); its new state."""
        return self._run(calls.control("cancel", job_id))

    def reschedule(self, job_id: str) -> State:
        """Queue a failed or canceled job again (``Conflict`` otherwise)."""
        return self._run(calls.control("reschedule", job_id))

    def start(self, job_id: str) -> State:
        """Queue a job submitted with ``hold: true``."""
        return self._run(calls.control("start", job_id))

    def delete(self, job_id: str) -> None:
        """Delete a final or held job with its history and data (``Conflict`` otherwise)."""
        self._run(calls.delete(job_id))

    def patch(
        self,
        job_id: str,
        *,
        priority: int | None = None,
        labels: Mapping[str, str | None] | None = None,
        app_status: str | None = None,
    ) -> Job:
        """Change priority, labels (a ``None`` value removes that label) or app status."""
        return self._run(calls.patch(job_id, priority, labels, app_status))

    def cancel_many(self, ids: Sequence[str]) -> BulkResult:
        return self._bulk(calls.bulk("cancel", ids))

    def reschedule_many(self, ids: Sequence[str]) -> BulkResult:
        return self._bulk(calls.bulk("reschedule", ids))

    def start_many(self, ids: Sequence[str]) -> BulkResult:
        return self._bulk(calls.bulk("start", ids))

    def delete_many(self, ids: Sequence[str]) -> BulkResult:
        return self._bulk(calls.bulk("delete", ids))

    def patch_many(
        self,
        ids: Sequence[str],
        *,
        priority: int | None = None,
        labels: Mapping[str, str | None] | None = None,
        app_status: str | None = None,
    ) -> BulkResult:
        changes = calls.patch_body(priority, labels, app_status)
        return self._bulk(calls.bulk("patch", ids, changes))

    # -- waiting and logs --------------------------------------------------------------

    @overload
    def wait(  # type: ignore[overload-overlap]  # str is an Iterable[str]: first match wins
        self,
        ids: str,
        timeout: float | None = None,
        *,
        interval: float = 2.0,
        on_final: Callable[[Job], None] | None = None,
    ) -> Job: ...

    @overload
    def wait(
        self,
        ids: Iterable[str],
        timeout: float | None = None,
        *,
        interval: float = 2.0,
        on_final: Callable[[Job], None] | None = None,
    ) -> list[Job]: ...

    def wait(
        self,
        ids: str | Iterable[str],
        timeout: float | None = None,
        *,
        interval: float = 2.0,
        on_final: Callable[[Job], None] | None = None,
    ) -> Job | list[Job]:
        """Poll until every job is final; the jobs (full views) in input order.

        One id gives one Job. Polls start fast and slow down to every ``interval`` seconds;
        ``on_final`` is called once per job as it finishes. Raises ``WaitTimeout`` (with
        ``.pending``) after ``timeout`` seconds, ``NotFound`` for an unknown id.
        """
        waiter = calls.Waiter([ids] if isinstance(ids, str) else ids, timeout, interval, on_final)
        while not waiter.finished:
            waiter.absorb([self._run(c) for c in waiter.calls()])
            for job_id in waiter.missing():
                self.get(job_id)  # raises NotFound; else it appeared meanwhile: poll again
            if not waiter.finished:
                time.sleep(waiter.next_delay())
        jobs = waiter.result()
        return jobs[0] if isinstance(ids, str) else jobs

    def logs(
        self,
        job_id: str,
        *,
        stream: Stream = "stdout",
        follow: bool = False,
        executor: int = 0,
    ) -> Iterator[str]:
        """The job's ``stream`` as text chunks; with ``follow``, until the job ends.

        ``executor`` picks the executor (0, the first, by default). Servers without the
        logs endpoint answer 404: then the tail kept in the job's logs is returned (after
        waiting for the job to end, with ``follow``).
        """
        call = calls.logs(job_id, stream, follow, executor)
        timeout = httpx.Timeout(self.timeout, read=None if follow else self.timeout)
        try:
            with self._http.stream(
                call.method, call.path, params=call.params, timeout=timeout
            ) as resp:
                if resp.status_code != 404:
                    if resp.status_code >= 400:
                        resp.read()
                        raise from_response(resp)
                    yield from resp.iter_text()
                    return
        except httpx.TransportError as exc:
            raise connection_failed(self.url, exc) from exc
        job = self.wait(job_id) if follow else self.get(job_id)
        tail = calls.log_tail(job, stream, executor)
        if tail:
            yield tail

    # -- service and GA4GH TES ---------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._run(calls.health())

    def whoami(self) -> dict[str, Any]:
        """Who the server takes this client for: name, method, scopes, groups, admin."""
        return self._run(calls.whoami())

    def token_create(
        self,
        *,
        owner: str | None = None,
        scopes: Sequence[str] = ("submit",),
        name: str | None = None,
        groups: Sequence[str] = (),
        expires_in: int | None = None,
    ) -> dict[str, Any]:
        """Create a service token (admins); the answer's ``token`` is shown only this once."""
        return self._run(calls.token_create(owner, scopes, name, groups, expires_in))

    def token_list(self, *, include_inactive: bool = False) -> list[dict[str, Any]]:
        """Service tokens (admins), without their secrets."""
        return self._run(calls.token_list(include_inactive))

    def token_revoke(self, token_id: str) -> dict[str, Any]:
        """Revoke a service token (admins); revoking twice is harmless."""
        return self._run(calls.token_revoke(token_id))

    def service_info(self) -> dict[str, Any]:
        """The TES service-info document."""
        return self._run(calls.service_info())

    def tes_create(self, task: TaskSpec | Mapping[str, Any]) -> str:
        """Create a TES task; its id."""
        return self._run(calls.tes_create(task))

    def tes_get(self, task_id: str, view: View = "FULL") -> dict[str, Any]:
        return self._run(calls.tes_get(task_id, view))

    def tes_list(
        self,
        *,
        name_prefix: str | None = None,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        view: View = "MINIMAL",
    ) -> dict[str, Any]:
        """One page of TES tasks: ``{"tasks": [...], "next_page_token": …}``."""
        return self._run(calls.tes_list(name_prefix, state, tags, page_size, page_token, view))

    def tes_cancel(self, task_id: str) -> None:
        self._run(calls.tes_cancel(task_id))
