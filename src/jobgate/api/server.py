"""The HTTP server: uvicorn, with limits on connections that do not make requests.

uvicorn closes a keep-alive connection only after a response; a connection that never
sends a complete request head is kept open forever, and it admits every connection the
kernel hands it, so idle sockets alone could use up the process's open files. Here

- a connection must send a complete request head within ``http_header_timeout`` seconds
  of opening, and of each response, or it is closed;
- at most ``max_connections`` are open; one more closes the connection that has waited
  longest without a request under way, or, if every one is busy, the new one;
- at start the soft open-files limit is raised to the hard one, and ``max_connections``
  is lowered (with a warning) to what fits beside the files the service itself needs.

It serves TLS directly when a certificate is configured, and a UNIX socket besides (or
instead of) TCP; each connection's requests carry what the connection tells about its
client as scope extensions (:mod:`jobgate.api.transport`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from jobgate.api.jobsocket import bind_job_socket, close_job_socket, guarded
from jobgate.api.transport import bind_unix, connection_extensions, server_context, unlink_unix
from jobgate.config import Settings

log = logging.getLogger(__name__)

FD_RESERVE = 256
"""Open files kept for the service itself (database, logs, transfers, webhooks)."""
FD_PER_SLOT = 8
"""Open files one running task may take (pipes and log files of its executors)."""
MIN_CONNECTIONS = 64
_WARN_EVERY = 10.0


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus the limits above, and the server-wide list of connections
    waiting for a request head (oldest first), which every connection's protocol sees."""

    def __init__(
        self, app: Any, *, header_timeout: float, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.waiting: dict[_Limits, None] = {}
        self.last_warning = 0.0


class _Limits:
    """Mixed into a uvicorn HTTP protocol (which provides ``config``, ``loop``,
    ``transport``, ``connections`` and ``cycle``, the latest request's)."""

    config: Any
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    cycle: Any
    _head_for: Any = None
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        config: ServerConfig = self.config
        if len(self.connections) > config.max_connections:
            victim = self._oldest_waiting(config)
            self._warn(config, "closing one waiting for a request" if victim else "refusing one")
            if victim is None:
                transport.close()
                return
            victim._close()
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._disarm()
        self._await_head()

    # -- the header timeout ----------------------------------------------------------

    def _await_head(self) -> None:
        config: ServerConfig = self.config
        self._head_for = self.cycle  # a new request head replaces the cycle
        self._head_timer = self.loop.call_later(config.header_timeout, self._head_expired)
        config.waiting[self] = None

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.config.waiting.pop(self, None)

    def _idle(self) -> bool:
        """No request head arrived since the timer was set, and none is being answered."""
        cycle = self.cycle
        return cycle is self._head_for and (cycle is None or bool(cycle.response_complete))

    def _head_expired(self) -> None:
        self._head_timer = None
        self.config.waiting.pop(self, None)
        if self._idle():
            self._close()

    def _close(self) -> None:
        self._disarm()
        transport: asyncio.Transport = getattr(self, "transport")  # noqa: B009 - the base's
        if not transport.is_closing():
            transport.close()

    def _oldest_waiting(self, config: ServerConfig) -> _Limits | None:
        for conn in list(config.waiting):
            if conn is self:
                continue
            if conn._idle():
                return conn
            config.waiting.pop(conn, None)  # a request is under way: re-listed after it
        return None

    @staticmethod
    def _warn(config: ServerConfig, what: str) -> None:
        now = time.monotonic()
        if now - config.last_warning >= _WARN_EVERY:
            config.last_warning = now
            log.warning(
                "%d connections open (JOBGATE_MAX_CONNECTIONS): %s", config.max_connections, what
            )


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def _extended(app: ASGIApp, extensions: dict[str, Any]) -> ASGIApp:
    """``app``, its requests' scopes carrying ``extensions``."""

    async def extended(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["extensions"] = {**(scope.get("extensions") or {}), **extensions}
        await app(scope, receive, send)

    return extended


class _Peer:
    """Mixed into a uvicorn HTTP protocol: the connection's client facts (TLS client
    certificate chain, UNIX socket peer) go into every request's scope."""

    app: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        extensions = connection_extensions(transport)
        if extensions:
            self.app = _extended(self.app, extensions)


class H11Limited(_Limits, _Peer, H11Protocol):
    pass


class H11JobSocket(_Limits, H11Protocol):
    """The job socket's protocol: limits, and no peer facts (its requests are nobody's)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.app = guarded(self.app)


Protocol: type[asyncio.Protocol] = H11Limited
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsLimited(_Limits, _Peer, HttpToolsProtocol):
        pass

    Protocol = HttpToolsLimited
except ImportError:  # httptools is optional: uvicorn then parses with h11
    pass


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 30
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def connection_limit(settings: Settings, fd_limit: int) -> int:
    """``max_connections``, or what fits in ``fd_limit`` beside the service's own files.

    Raises ValueError when not even :data:`MIN_CONNECTIONS` fit.
    """
    reserve = FD_RESERVE + FD_PER_SLOT * settings.slots
    fits = fd_limit - reserve
    if fits < MIN_CONNECTIONS:
        raise ValueError(
            f"the open-files limit {fd_limit} leaves room for {max(fits, 0)} connections "
            f"beside the {reserve} files the service keeps for itself; raise it "
            f"(ulimit -n, or LimitNOFILE= under systemd) to at least {reserve + MIN_CONNECTIONS}"
        )
    if settings.max_connections > fits:
        log.warning(
            "JOBGATE_MAX_CONNECTIONS=%d does not fit in the open-files limit %d; "
            "serving at most %d connections (raise the limit to allow more)",
            settings.max_connections,
            fd_limit,
            fits,
        )
        return fits
    return settings.max_connections


class Gateway(uvicorn.Server):
    """uvicorn's server, also (or only) listening on a bound UNIX socket, never with TLS."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        unix: socket.socket | None,
        unix_path: Path | None = None,
        tcp: bool = True,
        job_socket: tuple[socket.socket, Path] | None = None,
    ) -> None:
        super().__init__(config)
        self.unix = unix
        self.unix_path = unix_path
        self.tcp = tcp
        self.job_socket = job_socket

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Here, not after run(): uvicorn re-raises SIGTERM once serving ends.
        if self.unix is not None and self.unix_path is not None:
            unlink_unix(self.unix, self.unix_path)
        if self.job_socket is not None:
            close_job_socket(*self.job_socket)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self._listen(sockets)
        if self.started and self.job_socket is not None:
            config = self.config
            loop = asyncio.get_running_loop()

            def protocol() -> asyncio.Protocol:
                return H11JobSocket(
                    config=config,
                    server_state=self.server_state,
                    app_state=self.lifespan.state,
                    _loop=loop,
                )

            sock, path = self.job_socket
            server = await loop.create_server(protocol, sock=sock, backlog=config.backlog)
            self.servers.append(server)
            log.info("job socket for sandboxed heartbeats at %s", path)

    async def _listen(self, sockets: list[socket.socket] | None) -> None:
        if self.unix is None:
            await super().startup(sockets)
            return
        if not self.tcp:  # the socket alone (settings refuse TLS without TCP)
            await super().startup([self.unix])
            log.info("jobgate serving on unix socket %s", self.unix.getsockname())
            return
        await super().startup(sockets)
        if not self.started:
            return
        config = self.config
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )

        server = await loop.create_server(protocol, sock=self.unix, backlog=config.backlog)
        self.servers.append(server)
        log.info("jobgate serving on unix socket %s too", self.unix.getsockname())


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket several worker processes bind at once (SO_REUSEPORT: the
    kernel spreads new connections over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: Any, settings: Settings, *, log_level: str, worker: int | None = None) -> None:
    """Run ``app`` until stopped (SIGINT/SIGTERM). Raises ValueError on impossible limits,
    and on TLS files or a socket path that cannot be used (naming the setting).

    ``worker``: this process is API worker number ``worker`` of several sharing the port
    (SO_REUSEPORT); only worker 0 serves the UNIX socket and the job socket."""
    files = raise_fd_limit()
    limit = connection_limit(settings, files)
    log.info("open-files limit %d: at most %d client connections", files, limit)
    tls = None
    if settings.tls_cert is not None:
        tls = server_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    first = worker is None or worker == 0
    unix = bind_unix(settings.uds) if settings.uds is not None and first else None
    job_socket = None
    try:
        if first:
            job_socket = (bind_job_socket(settings.job_socket), settings.job_socket)
    except OSError as exc:  # heartbeats then need the network (JOBGATE_EXECUTOR_NETWORK)
        log.warning("no job socket at %s: %s", settings.job_socket, exc)
    sockets = None
    if worker is not None and settings.tcp:
        sockets = [reuse_port_socket(settings.host, settings.port)]
    config = ServerConfig(
        app,
        header_timeout=settings.http_header_timeout,
        max_connections=limit,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        http=Protocol,
        timeout_keep_alive=settings.http_keep_alive_timeout,
    )
    config.load()
    config.ssl = tls  # our own context (uvicorn's options cannot ask for proxy certificates)
    try:
        gateway = Gateway(
            config,
            unix=unix,
            unix_path=settings.uds if unix is not None else None,
            tcp=settings.tcp,
            job_socket=job_socket,
        )
        gateway.run(sockets=sockets)
    finally:
        if unix is not None and settings.uds is not None:
            unlink_unix(unix, settings.uds)
        if job_socket is not None:
            close_job_socket(*job_socket)
