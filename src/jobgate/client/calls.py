"""Every API call described once, without I/O, for both the sync and the async client.

A :class:`Call` says what to send and how to read the answer; the clients only move bytes
(and retry the calls marked ``retry``). This keeps :class:`~jobgate.client.Client` and
:class:`~jobgate.client.AsyncClient` identical by construction.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from jobgate.client.errors import ErrorDetail, InvalidRequest, WaitTimeout, from_response
from jobgate.client.models import BulkResult, Event, Job, SearchPage
from jobgate.domain.models import TaskSpec
from jobgate.domain.native import JobRequest, RangeParam
from jobgate.domain.query import RETURNABLE, Filter, SearchRequest, Sort
from jobgate.domain.states import FINAL, State

T = TypeVar("T")

JobInput = JobRequest | Mapping[str, Any] | str
"""A job: the server's model, a dict, or YAML/JSON text (sent as is, checked server-side)."""
ParamInput = Sequence[str | int | float] | range | RangeParam | Mapping[str, int]
FilterInput = Filter | Mapping[str, Any] | tuple[str, Any] | tuple[str, str, Any]
"""A filter: the model, a dict, ``(field, value)`` or ``(field, op, value)``."""
SortInput = Sort | Mapping[str, Any] | str
"""A sort key: the model, a dict, ``"field"`` (newest/largest first) or ``"field:asc"``."""
View = Literal["MINIMAL", "BASIC", "FULL"]
Stream = Literal["stdout", "stderr"]

NATIVE = "/api/v1"
TES = "/ga4gh/tes/v1"
WAIT_CHUNK = 500
"""Ids per search request while waiting (keeps each request and its IN list small)."""
_FINAL_NAMES = frozenset(s.value for s in FINAL)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP exchange: the request, and ``parse`` for a successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    content: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: bool = False
    """Safe to resend on connection errors, 409 (still in flight) and 5xx."""

    def finish(self, resp: httpx.Response) -> T:
        """The parsed answer, or the typed error the server sent."""
        if resp.status_code >= 400:
            raise from_response(resp)
        return self.parse(resp)


def retryable(resp: httpx.Response) -> bool:
    return resp.status_code >= 500 or resp.status_code in (409, 429)


def backoff(attempt: int, base: float) -> float:
    """Seconds before retry ``attempt`` (0-based): exponential, capped at 5 s."""
    return float(min(base * 2**attempt, 5.0))


def _seg(job_id: str) -> str:
    return quote(job_id, safe="")


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _json_call(method: str, path: str, body: Any, parse: Callable[[httpx.Response], T]) -> Call[T]:
    return Call(
        method, path, parse, content=_dumps(body), headers={"content-type": "application/json"}
    )


def _invalid(exc: ValidationError, where: str) -> InvalidRequest:
    details = []
    for err in exc.errors():
        loc = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        details.append(ErrorDetail(loc, str(err["msg"]).removeprefix("Value error, ")))
    return InvalidRequest(
        "; ".join(str(d) for d in details[:3]), status=400, code="invalid_request", errors=details
    )


def _validate(cls: type[BaseModel], data: Any, where: str) -> Any:
    """``cls(data)``, with a failure raised as the same InvalidRequest the server would send."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, where) from exc


# -- bodies ------------------------------------------------------------------------------


def job_json(job: JobRequest | Mapping[str, Any]) -> dict[str, Any]:
    """A job as a JSON-ready dict."""
    if not isinstance(job, JobRequest):
        return dict(job)
    out = job.model_dump(mode="json", exclude_none=True)
    if job.script is not None:
        # The model expands ``script`` into ``executors``; send one of the two, as written.
        out.pop("executors", None)
    return out


def job_body(job: JobInput) -> tuple[bytes, str]:
    """(body, content type) for one job; text goes as YAML, a superset of JSON."""
    if isinstance(job, str):
        return job.encode(), "application/yaml"
    return _dumps(job_json(job)), "application/json"


def _job_item(job: JobInput, index: int) -> Any:
    if not isinstance(job, str):
        return job_json(job)
    import yaml  # only bulk submissions of YAML text need it

    try:
        return yaml.safe_load(job)
    except yaml.YAMLError as exc:
        raise InvalidRequest(
            "a job is not valid YAML",
            errors=[ErrorDetail(f"jobs[{index}]", str(exc)[:300])],
        ) from exc


def params_json(parameters: Mapping[str, ParamInput]) -> dict[str, Any]:
    """Parametric parameters as JSON: ``range(0, 10)`` → ``{"start": 0, "stop": 10, …}``."""
    out: dict[str, Any] = {}
    for name, values in parameters.items():
        if isinstance(values, range):
            out[name] = {"start": values.start, "stop": values.stop, "step": values.step}
        elif isinstance(values, RangeParam):
            out[name] = values.model_dump()
        elif isinstance(values, Mapping):
            out[name] = dict(values)
        else:
            out[name] = list(values)
    return out


def _filter(f: FilterInput) -> Any:
    if isinstance(f, tuple):
        if len(f) == 2:
            return {"field": f[0], "op": "eq", "value": f[1]}
        return {"field": f[0], "op": f[1], "value": f[2]}
    return f


def _sort(s: SortInput) -> Any:
    if isinstance(s, str):
        name, _, direction = s.partition(":")
        return {"field": name, "direction": direction or "desc"}
    return s


def filters_json(filters: Iterable[FilterInput] | None) -> list[Filter]:
    return [_validate(Filter, _filter(f), f"filters[{i}]") for i, f in enumerate(filters or [])]


# -- parsers -----------------------------------------------------------------------------


def _job(resp: httpx.Response) -> Job:
    return Job.model_validate(resp.json())


def _state(resp: httpx.Response) -> State:
    return State(resp.json()["state"])


def _bulk(resp: httpx.Response) -> BulkResult:
    return BulkResult.from_json(resp.json())


def _dict(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()
    return body


def _none(resp: httpx.Response) -> None:
    return None


# -- native API --------------------------------------------------------------------------


def _idem(key: str | None) -> dict[str, str]:
    return {"idempotency-key": key or str(uuid.uuid4())}


def submit(job: JobInput, key: str | None) -> Call[Job]:
    content, ctype = job_body(job)
    headers = {"content-type": ctype, **_idem(key)}
    return Call("POST", f"{NATIVE}/jobs", _job, content=content, headers=headers, retry=True)


def submit_bulk(jobs: Sequence[JobInput], key: str | None) -> Call[BulkResult]:
    body = {"jobs": [_job_item(j, i) for i, j in enumerate(jobs)]}
    headers = {"content-type": "application/json", **_idem(key)}
    return Call(
        "POST", f"{NATIVE}/jobs/bulk", _bulk, content=_dumps(body), headers=headers, retry=True
    )


def submit_parametric(
    job: JobRequest | Mapping[str, Any], parameters: Mapping[str, ParamInput], key: str | None
) -> Call[BulkResult]:
    body = {"job": job_json(job), "parameters": params_json(parameters)}
    headers = {"content-type": "application/json", **_idem(key)}
    path = f"{NATIVE}/jobs/parametric"
    return Call("POST", path, _bulk, content=_dumps(body), headers=headers, retry=True)


def get(job_id: str) -> Call[Job]:
    return Call("GET", f"{NATIVE}/jobs/{_seg(job_id)}", _job)


def events(job_id: str) -> Call[list[Event]]:
    def parse(resp: httpx.Response) -> list[Event]:
        return [Event.model_validate(e) for e in resp.json()["events"]]

    return Call("GET", f"{NATIVE}/jobs/{_seg(job_id)}/events", parse)


def search_request(
    filters: Iterable[FilterInput] | None = None,
    sort: Iterable[SortInput] | None = None,
    fields: Sequence[str] | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> SearchRequest:
    """A validated search (the server's own model: bad fields fail here, as a 400 would)."""
    data: dict[str, Any] = {
        "filters": [_filter(f) for f in filters or []],
        "fields": list(fields) if fields is not None else None,
        "limit": limit,
        "cursor": cursor,
    }
    if sort is not None:
        data["sort"] = [_sort(s) for s in sort]
    req: SearchRequest = _validate(SearchRequest, data, "body")
    return req


def search(req: SearchRequest) -> Call[SearchPage]:
    def parse(resp: httpx.Response) -> SearchPage:
        body = resp.json()
        return SearchPage(body["jobs"], body.get("next_cursor"))

    body = req.model_dump(mode="json", exclude_none=True)
    return _json_call("POST", f"{NATIVE}/jobs/search", body, parse)


def summary(group_by: Sequence[str], filters: Iterable[FilterInput] | None) -> Call[list[Any]]:
    def parse(resp: httpx.Response) -> list[Any]:
        groups: list[Any] = resp.json()["groups"]
        return groups

    body = {
        "group_by": list(group_by),
        "filters": [f.model_dump(mode="json") for f in filters_json(filters)],
    }
    return _json_call("POST", f"{NATIVE}/jobs/summary", body, parse)


Action = Literal["cancel", "reschedule", "start"]


def control(action: Action, job_id: str) -> Call[State]:
    return Call("POST", f"{NATIVE}/jobs/{_seg(job_id)}/{action}", _state)


def delete(job_id: str) -> Call[None]:
    return Call("DELETE", f"{NATIVE}/jobs/{_seg(job_id)}", _none)


def patch_body(
    priority: int | None, labels: Mapping[str, str | None] | None, app_status: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if priority is not None:
        body["priority"] = priority
    if labels is not None:
        body["labels"] = dict(labels)
    if app_status is not None:
        body["app_status"] = app_status
    return body


def patch(
    job_id: str,
    priority: int | None,
    labels: Mapping[str, str | None] | None,
    app_status: str | None,
) -> Call[Job]:
    body = patch_body(priority, labels, app_status)
    return _json_call("PATCH", f"{NATIVE}/jobs/{_seg(job_id)}", body, _job)


BulkAction = Literal["cancel", "reschedule", "start", "delete", "patch"]


BULK_MAX = 10_000
"""Most ids the server takes in one bulk request; the clients split longer lists."""


def bulk(
    action: BulkAction, ids: Sequence[str], changes: Mapping[str, Any] | None = None
) -> list[Call[BulkResult]]:
    """Bulk control calls, one per :data:`BULK_MAX` ids, whose results concatenate in
    input order; ``changes`` are the patch fields (for ``patch`` only)."""
    return [
        _json_call("POST", f"{NATIVE}/jobs/{action}", {"ids": list(part), **(changes or {})}, _bulk)
        for part in (ids[i : i + BULK_MAX] for i in range(0, len(ids), BULK_MAX))
    ]


def logs(job_id: str, stream: Stream, follow: bool, executor: int) -> Call[None]:
    """The log stream request (read incrementally by the clients, never parsed)."""
    params = {"stream": stream, "follow": "true" if follow else "false", "executor": executor}
    return Call("GET", f"{NATIVE}/jobs/{_seg(job_id)}/logs", _none, params=params)


def log_tail(job: Job, stream: Stream, executor: int) -> str:
    """The fallback when the server has no logs endpoint: the tail kept in the job's logs."""
    runs = job.logs[-1].logs[executor : executor + 1] if job.logs else []
    return "".join((r.stdout if stream == "stdout" else r.stderr) or "" for r in runs)


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", _dict)


# -- GA4GH TES ---------------------------------------------------------------------------


def tes_create(task: TaskSpec | Mapping[str, Any]) -> Call[str]:
    def parse(resp: httpx.Response) -> str:
        return str(resp.json()["id"])

    body = task.model_dump(mode="json", exclude_none=True) if isinstance(task, TaskSpec) else task
    return _json_call("POST", f"{TES}/tasks", body, parse)


def tes_get(task_id: str, view: View) -> Call[dict[str, Any]]:
    return Call("GET", f"{TES}/tasks/{_seg(task_id)}", _dict, params={"view": view})


def tes_list(
    name_prefix: str | None,
    state: str | None,
    tags: Mapping[str, str] | None,
    page_size: int | None,
    page_token: str | None,
    view: View,
) -> Call[dict[str, Any]]:
    params: dict[str, Any] = {"view": view}
    for key, value in (
        ("name_prefix", name_prefix),
        ("state", state),
        ("page_size", page_size),
        ("page_token", page_token),
    ):
        if value is not None:
            params[key] = value
    if tags:
        params["tag_key"] = list(tags)
        params["tag_value"] = list(tags.values())
    return Call("GET", f"{TES}/tasks", _dict, params=params)


def tes_cancel(task_id: str) -> Call[None]:
    return Call("POST", f"{TES}/tasks/{_seg(task_id)}:cancel", _none)


def service_info() -> Call[dict[str, Any]]:
    return Call("GET", f"{TES}/service-info", _dict)


# -- waiting -----------------------------------------------------------------------------


class Waiter:
    """The bookkeeping of :meth:`Client.wait`: which ids are pending, which are final.

    Each round, :meth:`calls` asks for the pending jobs (chunked searches, all fields);
    :meth:`absorb` takes the answers. Jobs missing from an answer do not exist (or were
    deleted); :meth:`missing` names them so the client can raise NotFound via ``get``.
    """

    def __init__(
        self,
        ids: Iterable[str],
        timeout: float | None,
        interval: float,
        on_final: Callable[[Job], None] | None = None,
    ) -> None:
        self.order = list(dict.fromkeys(ids))
        self.pending = set(self.order)
        self.done: dict[str, Job] = {}
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.max_interval = interval
        self.delay = min(0.1, interval)
        self.on_final = on_final
        self._seen: set[str] = set()

    def calls(self) -> list[Call[SearchPage]]:
        pending = [i for i in self.order if i in self.pending]
        out = []
        for start in range(0, len(pending), WAIT_CHUNK):
            chunk = pending[start : start + WAIT_CHUNK]
            req = search_request([("id", "in", chunk)], fields=RETURNABLE, limit=len(chunk))
            call = search(req)
            # Searches change nothing: resending one after a blip is safe.
            out.append(dataclasses.replace(call, retry=True))
        return out

    def absorb(self, pages: Iterable[SearchPage]) -> None:
        self._seen = set()
        for page in pages:
            for row in page.jobs:
                self._seen.add(row["id"])
                if row["id"] in self.pending and row["state"] in _FINAL_NAMES:
                    job = Job.model_validate(row)
                    self.pending.discard(job.id)
                    self.done[job.id] = job
                    if self.on_final:
                        self.on_final(job)

    def missing(self) -> list[str]:
        return [i for i in self.order if i in self.pending and i not in self._seen]

    @property
    def finished(self) -> bool:
        return not self.pending

    def next_delay(self) -> float:
        """Seconds to sleep before the next round (grows to ``interval``); raises on timeout."""
        delay = self.delay
        self.delay = min(self.delay * 1.5, self.max_interval)
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                pending = [i for i in self.order if i in self.pending]
                raise WaitTimeout(
                    f"{len(pending)} of {len(self.order)} jobs not final after {self.timeout}s",
                    pending=pending,
                    done=self.result(),
                )
            delay = min(delay, left)
        return delay

    def result(self) -> list[Job]:
        return [self.done[i] for i in self.order if i in self.done]


# -- identity and service tokens -----------------------------------------------------------


def whoami() -> Call[dict[str, Any]]:
    return Call("GET", f"{NATIVE}/me", _dict, retry=True)


def token_create(
    owner: str | None,
    scopes: Sequence[str],
    name: str | None,
    groups: Sequence[str],
    expires_in: int | None,
) -> Call[dict[str, Any]]:
    body = {
        "owner": owner,
        "scopes": list(scopes),
        "name": name,
        "groups": list(groups),
        "expires_in": expires_in,
    }
    return _json_call("POST", f"{NATIVE}/tokens", body, _dict)


def token_list(include_inactive: bool) -> Call[list[dict[str, Any]]]:
    def parse(resp: httpx.Response) -> list[dict[str, Any]]:
        return list(resp.json()["tokens"])

    params = {"all": "true"} if include_inactive else None
    return Call("GET", f"{NATIVE}/tokens", parse, params=params, retry=True)


def token_revoke(token_id: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"{NATIVE}/tokens/{_seg(token_id)}", _dict, retry=True)
