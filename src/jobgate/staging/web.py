"""``http(s)://``: GET for inputs, PUT for outputs under the prefixes the operator lists.

httpx streams the bodies. Redirects are followed here, one hop at a time, so a refusal
can name the hop; the client's :class:`~jobgate.staging.guard.GuardedTransport` checks the
address of every connection, the hops' included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from jobgate.domain.models import FileType
from jobgate.errors import StagingError
from jobgate.staging.base import Entry, Store
from jobgate.staging.guard import Refused
from jobgate.staging.transfer import STREAM_CHUNK, Budget, Meter, Transient
from jobgate.staging.urls import join, redact

MAX_REDIRECTS = 10


class HttpStore(Store):
    def __init__(self, url: str, client: httpx.AsyncClient, *, put: bool) -> None:
        super().__init__(url)
        self.client = client
        self.put = put

    async def kind(self) -> FileType:
        return FileType.FILE  # a web server has no directories to list

    async def listing(self) -> list[Entry]:
        raise StagingError("directories cannot be fetched over HTTP")

    async def download(self, rel: str, dest: Path, budget: Budget) -> int:
        url = join(self.url, rel)
        meter = Meter(budget)
        try:
            response = await self._get(url)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with dest.open("wb") as f:
                    async for data in response.aiter_raw():  # as the network delivers
                        meter.add(len(data))
                        f.write(data)
            finally:
                await response.aclose()
        except BaseException:
            meter.undo()
            raise
        return meter.count

    async def _get(self, url: str) -> httpx.Response:
        hop = url
        for _ in range(MAX_REDIRECTS + 1):
            request = self.client.build_request("GET", hop, headers={"Accept-Encoding": "identity"})
            try:
                response = await self.client.send(request, stream=True, follow_redirects=False)
            except Refused as exc:
                if hop == url:
                    raise
                raise Refused(f"redirect to {redact(hop)}: {exc}") from exc
            if response.is_redirect and response.next_request is not None:
                await response.aclose()
                hop = str(response.next_request.url)
                if httpx.URL(hop).scheme not in ("http", "https"):
                    raise StagingError(f"redirect to {redact(hop)}: not an http(s) URL")
                continue
            try:
                _check_status(response)
            except BaseException:
                await response.aclose()
                raise
            return response
        raise StagingError(f"more than {MAX_REDIRECTS} redirects")

    async def upload(self, src: Path, rel: str, budget: Budget) -> int:
        if not self.put:
            raise StagingError(
                "HTTP PUT is not enabled for this URL (the operator lists URL prefixes "
                "that accept it in JOBGATE_STAGING_HTTP_PUT_PREFIXES)"
            )
        url = join(self.url, rel)
        meter = Meter(budget)
        size = (await asyncio.to_thread(src.stat)).st_size

        async def body() -> AsyncIterator[bytes]:
            with src.open("rb") as f:
                while data := f.read(STREAM_CHUNK):
                    meter.add(len(data))
                    yield data

        try:
            response = await self.client.put(
                url, content=body(), headers={"Content-Length": str(size)}
            )
            _check_status(response)
        except BaseException:
            meter.undo()
            raise
        return meter.count


def _check_status(response: httpx.Response) -> None:
    code = response.status_code
    if code < 300:
        return
    text = f"HTTP {code} {response.reason_phrase}".rstrip()
    if code >= 500 or code in (408, 429):
        raise Transient(text)
    if code == 404:
        raise FileNotFoundError(text)
    raise StagingError(text)
