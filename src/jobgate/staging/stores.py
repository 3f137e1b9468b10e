"""From a task's URL to the :class:`~jobgate.staging.base.Store` that moves its bytes."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from jobgate.errors import StagingError
from jobgate.staging.base import Store
from jobgate.staging.filesystems import FtpStore, S3Store, s3_filesystem
from jobgate.staging.guard import Guard, GuardedTransport, Refused
from jobgate.staging.local import LocalStore, local_path
from jobgate.staging.transfer import describe
from jobgate.staging.urls import INPUT_SCHEMES, OUTPUT_SCHEMES, redact, scheme_of
from jobgate.staging.web import HttpStore


@dataclass(frozen=True)
class StoreConfig:
    """What the stores need from the settings (see :class:`jobgate.config.Settings`)."""

    allowed_dirs: tuple[Path, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    s3_endpoint_url: str = ""
    ftp_username: str = ""
    ftp_password: str = ""
    http_put_prefixes: tuple[str, ...] = ()
    chunk: int = 8 * 1024 * 1024
    timeout: float = 60.0

    @property
    def s3_endpoint(self) -> str:
        """The endpoint botocore will use: ours, else the standard variables."""
        return (
            self.s3_endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3", "")
            or os.environ.get("AWS_ENDPOINT_URL", "")
        )


def storage_prefixes(allowed_dirs: tuple[Path, ...], put_prefixes: tuple[str, ...]) -> list[str]:
    """``service-info.storage``: the allowed directories as ``file://`` URLs, the schemes
    inputs may use, and the prefixes outputs may be PUT to."""
    out = [d.as_uri() for d in allowed_dirs]
    out += ["http://", "https://", "s3://", "ftp://", "sandbox://"]
    out += [p for p in put_prefixes if p not in out]
    return out


class Stores:
    """Opens stores for URLs; owns the shared HTTP client and S3 filesystem."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.guard = Guard.from_entries(config.allowed_hosts)
        self.http = httpx.AsyncClient(
            transport=GuardedTransport(self.guard, httpx.AsyncHTTPTransport()),
            timeout=config.timeout,
            follow_redirects=False,
            trust_env=False,  # a proxy would connect on our behalf, past the guard
        )
        self._s3: Any = None

    async def aclose(self) -> None:
        await self.http.aclose()

    def storage(self) -> list[str]:
        """The prefixes tasks may use, for ``service-info.storage``."""
        return storage_prefixes(self.config.allowed_dirs, self.config.http_put_prefixes)

    async def open(self, url: str, *, what: str) -> Store:
        """The store of ``url``; raises :class:`StagingError` naming the URL when the
        scheme is not supported here or the guard refuses the host."""
        scheme = scheme_of(url)
        shown = redact(url)
        cfg = self.config
        try:
            if scheme == "file":
                path = local_path(url, cfg.allowed_dirs, what=what)
                return LocalStore(url, path, cfg.allowed_dirs)
            if scheme in ("http", "https"):
                put = any(url.startswith(p) for p in cfg.http_put_prefixes)
                return HttpStore(url, self.http, put=put)
            if scheme == "s3":
                return await self._open_s3(url)
            if scheme == "ftp":
                return await self._open_ftp(url)
        except (Refused, socket.gaierror, ValueError) as exc:
            raise StagingError(f"{what} {shown}: {describe(exc)}") from exc
        supported = INPUT_SCHEMES if what == "input" else OUTPUT_SCHEMES
        raise StagingError(
            f"{what} {shown}: unsupported URL scheme {scheme!r} (supported: {', '.join(supported)})"
        )

    async def _open_s3(self, url: str) -> Store:
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError("expected s3://bucket/key")
        endpoint = self.config.s3_endpoint
        if endpoint:
            ep = urlsplit(endpoint)
            host = ep.hostname or ""
            await self.guard.resolve(host, ep.port or (443 if ep.scheme == "https" else 80))
        if self._s3 is None:
            self._s3 = await asyncio.to_thread(s3_filesystem, endpoint, self.config.timeout)
        return S3Store(url, self._s3, self.config.chunk)

    async def _open_ftp(self, url: str) -> Store:
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise ValueError("expected ftp://host/path")
        port = parts.port or 21
        addresses = await self.guard.resolve(host, port)
        if parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
        elif self.config.ftp_username:
            user, password = self.config.ftp_username, self.config.ftp_password
        else:
            user, password = "anonymous", "anonymous@"
        return FtpStore(
            url,
            addresses[0],
            port,
            user,
            password,
            unquote(parts.path) or "/",
            timeout=self.config.timeout,
        )
