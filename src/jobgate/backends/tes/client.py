"""HTTP access to one remote TES server: create, batched listing, FULL reads, cancel.

Only the configured base URL is ever contacted: redirects are not followed and the paging
token a server returns is sent back to that same URL, so nothing in a task or an answer
can make the gateway reach another address.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_PAGE_SIZE = 2048


class RemoteUnavailable(Exception):
    """The remote could not be reached or answered 429/5xx (a retry later may work).

    ``sent`` says whether a request may have reached it (a lost reply), as opposed to
    a connection that was never made."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class RemoteRefused(Exception):
    """The remote answered a 4xx other than 404/408/429: it will not do this."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class RemoteNotFound(Exception):
    """The remote answered 404 for a task."""


@dataclass(frozen=True)
class Auth:
    """How requests authenticate: a fixed header, or the submitter's token per request."""

    header: str | None = None
    """A fixed ``Authorization`` value (bearer or basic), or None."""


class TesClient:
    """An async client of one TES base URL (``…/ga4gh/tes/v1``), with a requests counter.

    Every call raises :class:`RemoteUnavailable`, :class:`RemoteRefused` or
    :class:`RemoteNotFound`; GETs are retried briefly on 429/5xx with backoff (honouring
    ``Retry-After``), and after repeated failures the client cools down: calls fail at
    once until ``busy_until``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.requests = 0
        """Requests sent (for benchmarks and the backend's description)."""
        self.busy_until = 0.0
        self._strikes = 0
        self._http = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
            headers={"accept": "application/json"},
        )

    async def close(self) -> None:
        await self._http.aclose()

    def _headers(self, token: str | None) -> dict[str, str]:
        if token is not None:
            return {"authorization": f"Bearer {token}"}
        if self.auth.header is not None:
            return {"authorization": self.auth.header}
        return {}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        params: Any = None,
        body: Any = None,
        retry: bool,
    ) -> Any:
        if time.monotonic() < self.busy_until:
            raise RemoteUnavailable(
                f"{self.base_url} is cooling down after errors "
                f"({self.busy_until - time.monotonic():.0f}s left)",
                sent=False,
            )
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                resp = await self._http.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=body,
                    headers=self._headers(token),
                )
            except httpx.ConnectError as exc:
                err = RemoteUnavailable(f"cannot connect to {self.base_url}: {exc}", sent=False)
                wait = None
            except httpx.HTTPError as exc:
                # Timeouts, resets: the request may have been handled.
                err = RemoteUnavailable(
                    f"no answer from {self.base_url}: {type(exc).__name__} {exc}", sent=True
                )
                wait = None
            else:
                if resp.status_code < 300:
                    self._strikes = 0
                    return resp.json() if resp.content else {}
                if resp.status_code == 404:
                    self._strikes = 0
                    raise RemoteNotFound(_message(resp))
                if resp.status_code not in RETRIED_STATUS:
                    raise RemoteRefused(resp.status_code, _message(resp))
                err = RemoteUnavailable(
                    f"{self.base_url} answered {resp.status_code}: {_message(resp)}",
                    sent=resp.status_code >= 500,
                )
                wait = _retry_after(resp)
            if not retry or attempt > self.retries:
                self._strike(wait)
                raise err
            delay = wait if wait is not None else self.backoff * 2 ** (attempt - 1)
            await asyncio.sleep(min(self.max_backoff, delay) * random.uniform(0.8, 1.2))

    def _strike(self, wait: float | None) -> None:
        """Another failed call: cool down for a doubling time (or what Retry-After said)."""
        self._strikes += 1
        pause = wait if wait is not None else self.backoff * 2 ** min(self._strikes, 8)
        self.busy_until = time.monotonic() + min(self.max_backoff, pause)

    async def create(self, task: dict[str, Any], *, token: str | None) -> str:
        answer = await self._send("POST", "/tasks", token=token, body=task, retry=False)
        task_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise RemoteRefused(200, f"create answered without an id: {answer!r:.200}")
        return task_id

    async def get(self, task_id: str, *, token: str | None, view: str = "FULL") -> dict[str, Any]:
        answer = await self._send(
            "GET", f"/tasks/{_segment(task_id)}", token=token, params=[("view", view)], retry=True
        )
        if not isinstance(answer, dict):
            raise RemoteRefused(200, "a task that is not an object")
        return answer

    async def cancel(self, task_id: str, *, token: str | None) -> None:
        await self._send("POST", f"/tasks/{_segment(task_id)}:cancel", token=token, retry=True)

    async def list_tagged(
        self,
        key: str,
        value: str,
        *,
        token: str | None,
        want: set[str] | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> dict[str, str]:
        """id → state of the tasks tagged ``key=value`` (view MINIMAL), newest first, page
        by page; stops early once every id of ``want`` has been seen."""
        out: dict[str, str] = {}
        token_page: str | None = None
        while True:
            params: list[tuple[str, str]] = [
                ("view", "MINIMAL"),
                ("page_size", str(page_size)),
                ("tag_key", key),
                ("tag_value", value),
            ]
            if token_page:
                params.append(("page_token", token_page))
            answer = await self._send("GET", "/tasks", token=token, params=params, retry=True)
            for task in answer.get("tasks") or []:
                if isinstance(task, dict) and isinstance(task.get("id"), str):
                    out[task["id"]] = str(task.get("state") or "UNKNOWN")
            token_page = answer.get("next_page_token") or None
            if not token_page or (want is not None and want <= out.keys()):
                return out


def _segment(task_id: str) -> str:
    # A remote id goes into a path: keep it one segment.
    return urllib.parse.quote(task_id, safe="")


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("msg") or body)[:300]
    return str(body)[:300]


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None
