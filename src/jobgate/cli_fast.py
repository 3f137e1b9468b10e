"""The ``jobgate`` console entry point: the commonest client commands without typer.

``jobgate version``, ``jobgate status ID...`` and ``jobgate ls`` (optionally ``-q`` and
``--limit N`` up to one page, after the global ``--url``/``--token``/``--user``/
``--cert``/``--key``) are
answered here, with one request each over the standard library's ``http.client``: typer,
click, httpx and pydantic together cost more CPU at start than the whole command may. They
print what :mod:`jobgate.cli` prints (the same tables, messages and exit codes) and read
the same configuration (:func:`jobgate.client.config.resolve`). Every other command line
(``--help``, ``--json``, filters, a proxy in the environment, …) goes to the typer app.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from jobgate import __version__

if TYPE_CHECKING:
    import http.client

    from jobgate.client.config import ClientConfig

TIMEOUT = 30.0
"""Seconds per connect, send and read, as :class:`jobgate.client.Client`'s default."""
MAX_PAGE = 500
"""``ls`` asks for at most this many rows per request (as the typer command does)."""
GLOBALS = ("--url", "--token", "--user", "--cert", "--key")
PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class Fallback(Exception):
    """This command line is the typer app's to handle."""


def main() -> None:
    """Run ``jobgate`` with ``sys.argv``."""
    try:
        code = run_quick(sys.argv[1:])
        sys.stdout.flush()
    except Fallback:
        from jobgate.cli import app

        app()
        return
    # Ended as the typer app ends them: Ctrl-C exits 130; a closed pipe (``| head``) exits
    # 1, without Python complaining again when it flushes stdout at exit.
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_FAILED
    sys.exit(code)


def run_quick(argv: Sequence[str]) -> int:
    """Run a quick command and return its exit code; :class:`Fallback` for any other."""
    options, rest = _globals(argv)
    if rest == ["version"] and not options:
        sys.stdout.write(__version__ + "\n")
        return 0
    if not rest or rest[0] not in ("status", "ls"):
        raise Fallback
    command, args = rest[0], rest[1:]
    if command == "status":
        if not args or any(a.startswith("-") for a in args):
            raise Fallback
        return _guarded(options, lambda cfg: _status(cfg, args))
    quiet, limit = _ls_options(args)
    return _guarded(options, lambda cfg: _ls(cfg, quiet, limit))


def _globals(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The leading global options (:data:`GLOBALS`), and what follows them."""
    options: dict[str, str] = {}
    args = list(argv)
    while args and args[0].startswith("-"):
        name, eq, value = args[0].partition("=")
        if name not in GLOBALS or name in options:
            raise Fallback
        if not eq:
            if len(args) < 2:
                raise Fallback
            value = args[1]
            del args[0]
        del args[0]
        options[name] = value
    return options, args


def _ls_options(args: Sequence[str]) -> tuple[bool, int]:
    quiet, limit, rest = False, 50, list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-q", "--quiet"):
            quiet = True
        elif arg == "--limit" and rest:
            limit = _page_limit(rest.pop(0))
        elif arg.startswith("--limit="):
            limit = _page_limit(arg.partition("=")[2])
        else:
            raise Fallback
    return quiet, limit


def _page_limit(text: str) -> int:
    # typer reports a bad number; more than a page means following cursors.
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise Fallback
    return int(text)


def _guarded(options: dict[str, str], command: Callable[[ClientConfig], int]) -> int:
    """Resolve the configuration and run ``command(cfg)``; client errors exit 1."""
    from jobgate.cli_support import print_error
    from jobgate.client.config import resolve
    from jobgate.client.errors import JobgateClientError

    if PROXY_VARIABLES & {name.lower() for name in os.environ}:
        raise Fallback  # httpx honours proxies; http.client would not
    try:
        cfg = resolve(
            options.get("--url"),
            options.get("--token"),
            user=options.get("--user"),
            cert=options.get("--cert"),
            key=options.get("--key"),
        )
        code = command(cfg)
    except JobgateClientError as exc:
        print_error(exc, False)
        return EXIT_FAILED
    return code


def _status(cfg: ClientConfig, ids: Sequence[str]) -> int:
    from jobgate.cli_support import out, print_error, status_table
    from jobgate.client.errors import ApiError

    jobs, missing = [], False
    for job_id in ids:
        try:
            jobs.append(request(cfg, "GET", f"/api/v1/jobs/{quote(job_id, safe='')}"))
        except ApiError as exc:  # this id; a connection failure ends the command
            print_error(exc, False)
            missing = True
    if jobs or not missing:
        out().print(status_table(jobs))
    return EXIT_FAILED if missing else 0


def _ls(cfg: ClientConfig, quiet: bool, limit: int) -> int:
    from jobgate.cli_support import err, jobs_table, out

    # The server fills in the rest of the search (newest first) from the same model.
    rows = request(cfg, "POST", "/api/v1/jobs/search", {"limit": limit})["jobs"][:limit]
    if quiet:
        sys.stdout.write("".join(f"{row['id']}\n" for row in rows))
    elif rows:
        out().print(jobs_table(rows))
    else:
        err().print("no jobs match")
    return 0


def request(cfg: ClientConfig, method: str, path: str, body: Any = None) -> Any:
    """One exchange with the server; the JSON answer, or the client's typed error."""
    import http.client

    from jobgate.client.errors import from_answer, transport_failed

    url = urlsplit(cfg.base_url)
    conn: http.client.HTTPConnection
    if cfg.uds is not None:
        conn = _unix_connection(cfg.uds)
    elif url.scheme == "https":
        conn = http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=TIMEOUT, context=cfg.ssl_context()
        )
    else:
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=TIMEOUT)
    headers = cfg.headers()
    content = None
    if body is not None:
        content = json.dumps(body, separators=(",", ":")).encode()
        headers["content-type"] = "application/json"
    try:
        try:
            conn.connect()
        except TimeoutError:
            raise transport_failed(cfg.url, "timeout", "ConnectTimeout") from None
        except OSError as exc:
            raise transport_failed(cfg.url, "connect", str(exc)) from None
        try:
            conn.request(method, url.path + path, body=content, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except TimeoutError:
            raise transport_failed(cfg.url, "timeout", "ReadTimeout") from None
        except (OSError, http.client.HTTPException) as exc:
            raise transport_failed(cfg.url, "lost", str(exc) or type(exc).__name__) from None
    finally:
        conn.close()
    if resp.status >= 400:
        raise from_answer(resp.status, data, resp.reason)
    return json.loads(data)


def _unix_connection(path: str) -> http.client.HTTPConnection:
    """An HTTP connection over the UNIX socket at ``path``."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            self.sock = sock

    return UnixConnection("localhost", timeout=TIMEOUT)
