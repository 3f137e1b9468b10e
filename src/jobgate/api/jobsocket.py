"""The job socket: a UNIX socket bound into sandboxes without network, through which an
executor sends its own job's heartbeats (``JOBGATE_JOB_SOCKET``).

Every sandboxed task may connect to it (mode 0666), so it answers one route only, and only
with a job token: ``PATCH /api/v1/jobs/{id}/heartbeat``. The token then admits its own
job's heartbeat alone, as on TCP. Nothing else of the API is reachable through it, and its
requests carry no UNIX-socket identity (unlike ``JOBGATE_UDS``, whose requests are its
owner's).
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from jobgate.api.transport import unlink_unix
from jobgate.auth.jobtokens import PREFIX as JOB_TOKEN_PREFIX

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]

ROUTE = re.compile(r"/api/v1/jobs/[^/]+/heartbeat")


def bind_job_socket(path: Path) -> socket.socket:
    """A UNIX stream socket bound at ``path``, connectable by every uid; its directory is
    the service's alone (sandboxes get the socket by a bind). A stale file is replaced;
    OSError when another server listens there or the path cannot be bound."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink(missing_ok=True)  # stale: nobody listens
            else:
                raise OSError(f"another server listens on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o666)
    except OSError:
        sock.close()
        raise
    return sock


def close_job_socket(sock: socket.socket, path: Path) -> None:
    unlink_unix(sock, path)


def guarded(app: ASGIApp) -> ASGIApp:
    """``app`` behind the job socket's rule: one route, a job token, or 403."""

    async def guard(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return  # no websockets, no lifespan through the job socket
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if (
            scope.get("method") == "PATCH"
            and ROUTE.fullmatch(scope.get("path", ""))
            and auth.startswith(f"Bearer {JOB_TOKEN_PREFIX}")
        ):
            await app(scope, receive, send)
            return
        body = json.dumps(
            {
                "code": "forbidden",
                "status": 403,
                "message": "the job socket takes only a job's own heartbeats",
                "errors": [
                    {
                        "where": "request",
                        "what": "PATCH /api/v1/jobs/{id}/heartbeat with JOBGATE_JOB_TOKEN",
                    }
                ],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return guard
