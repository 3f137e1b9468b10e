"""Pulsar's job REST API (``pulsar/web/routes.py`` of galaxyproject/pulsar), over httpx.

Every call carries ``private_token`` as a query parameter (Pulsar's only authentication)
and goes to ``/managers/<manager>/…``. Errors are :class:`PulsarError`: ``transient``
when the server could not be reached or answered 5xx (trying again later may work),
not when it refused the token (401/403) or the request (other 4xx).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1024 * 1024


class PulsarError(Exception):
    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class PulsarClient:
    """One Pulsar server's manager, as a client of its REST API."""

    def __init__(
        self,
        url: str,
        token: str | None,
        manager: str = "_default_",
        *,
        timeout: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        self.url = url.rstrip("/")
        self.manager = manager
        self._token = token
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits)
        # Requests beyond the pool's connections wait here, not in httpcore's pool: it
        # rescans every waiting request whenever a connection frees up, so hundreds of
        # jobs submitted at once made each request cost time in the number waiting.
        self._slots = asyncio.Semaphore(max_connections)

    def _path(self, path: str) -> str:
        return f"{self.url}/managers/{self.manager}{path}"

    def _params(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        params = dict(extra or {})
        if self._token:
            params["private_token"] = self._token
        return params

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        *,
        root: bool = False,
    ) -> httpx.Response:
        url = f"{self.url}{path}" if root else self._path(path)
        try:
            async with self._slots:
                resp = await self._http.request(
                    method, url, params=self._params(params), content=content
                )
        except httpx.HTTPError as exc:
            raise PulsarError(
                f"Pulsar at {self.url} is unreachable: {type(exc).__name__}: {exc}",
                transient=True,
            ) from None
        if resp.status_code in (401, 403):
            raise PulsarError(
                f"Pulsar at {self.url} refused the private_token (HTTP {resp.status_code})",
                transient=False,
                status=resp.status_code,
            )
        if resp.status_code >= 400:
            raise PulsarError(
                f"Pulsar at {self.url} answered HTTP {resp.status_code} to {method} "
                f"{path.split('?')[0]} (manager {self.manager!r}: does it exist?)",
                transient=resp.status_code >= 500,
                status=resp.status_code,
            )
        return resp

    async def healthz(self) -> dict[str, Any]:
        """Pulsar's version; checks the token too (the endpoint requires it)."""
        data: dict[str, Any] = (await self._call("GET", "/healthz")).json()
        return data

    async def setup(self, job_id: str) -> dict[str, Any]:
        """Create the job's directory; returns its paths (``working_directory``, …)."""
        data: dict[str, Any] = (await self._call("POST", "/jobs", {"job_id": job_id})).json()
        return data

    async def upload(
        self, job_id: str, name: str, kind: str, content: bytes | AsyncIterator[bytes]
    ) -> None:
        """Put a file into the job's ``kind`` directory (``input``, ``config``, …)."""
        await self._call("POST", f"/jobs/{job_id}/files", {"name": name, "type": kind}, content)

    async def submit(
        self,
        job_id: str,
        command_line: str,
        *,
        submit_params: Mapping[str, Any] | None = None,
        env: list[dict[str, str]] | None = None,
        remote_staging: Mapping[str, Any] | None = None,
    ) -> None:
        """Launch the job (``remote_staging``: what Pulsar fetches first, its setup actions)."""
        params = {
            "command_line": command_line,
            "params": json.dumps(dict(submit_params or {})),
            "env": json.dumps(env or []),
        }
        if remote_staging:
            params["remote_staging"] = json.dumps(dict(remote_staging))
        await self._call("POST", f"/jobs/{job_id}/submit", params)

    async def status(self, job_id: str) -> dict[str, Any]:
        """Pulsar's status dict: ``status`` (preprocessing, queued, running,
        postprocessing, complete, failed, cancelled, lost), ``returncode``, …"""
        data: dict[str, Any] = (await self._call("GET", f"/jobs/{job_id}/status")).json()
        return data

    async def cancel(self, job_id: str) -> None:
        await self._call("PUT", f"/jobs/{job_id}/cancel")

    async def clean(self, job_id: str) -> None:
        """Delete the job's directory on the Pulsar server."""
        await self._call("DELETE", f"/jobs/{job_id}")

    async def download(
        self, job_id: str, name: str, dest: Path, kind: str = "output_workdir"
    ) -> None:
        """Write the job's file ``name`` (in its working directory) to ``dest``."""
        url = self._path(f"/jobs/{job_id}/files")
        params = self._params({"name": name, "type": kind})
        try:
            async with self._slots, self._http.stream("GET", url, params=params) as resp:
                if resp.status_code >= 400:
                    raise PulsarError(
                        f"Pulsar at {self.url} answered HTTP {resp.status_code} to GET {name}",
                        transient=resp.status_code >= 500,
                        status=resp.status_code,
                    )
                with dest.open("wb") as f:
                    async for chunk in resp.aiter_bytes(CHUNK):
                        f.write(chunk)
        except httpx.HTTPError as exc:
            raise PulsarError(
                f"Pulsar at {self.url} is unreachable: {type(exc).__name__}: {exc}",
                transient=True,
            ) from None

    async def read(self, job_id: str, name: str, kind: str = "output_workdir") -> bytes:
        """A small file of the job's working directory, whole."""
        resp = await self._call("GET", f"/jobs/{job_id}/files", {"name": name, "type": kind})
        return resp.content

    async def close(self) -> None:
        await self._http.aclose()
