"""The ``jobgate`` command: the server (``serve``) and a client for its native jobs API.

Client commands talk to the server at ``--url`` (or ``JOBGATE_URL``, or ``url`` in
``~/.config/jobgate/config.toml``, or http://127.0.0.1:8000). Exit codes: 0 success; 1 a
request or a job failed; 2 bad usage; 124 ``wait`` timed out; ``run`` exits with its job's
exit code.
"""

from __future__ import annotations

import functools
import logging
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TextIO, TypeVar, cast

import typer

from jobgate import __version__
from jobgate.cli_support import (
    err,
    events_table,
    jobs_table,
    out,
    parse_pairs,
    parse_params,
    print_bulk,
    print_error,
    print_json,
    read_document,
    split_list,
    state_text,
    status_table,
    summary_table,
)

# The client (httpx, pydantic models) is imported by the commands that talk to a server,
# the server stack only by ``serve``: ``jobgate version`` and ``--help`` import neither.
if TYPE_CHECKING:
    from jobgate.client import Client, Job
    from jobgate.client.calls import FilterInput, Stream

EXIT_FAILED = 1
EXIT_TIMEOUT = 124  # like coreutils' timeout(1)
EXIT_INTERRUPTED = 130

app = typer.Typer(
    help="jobgate: one front door to many compute systems.\n\n"
    "Start a server with `jobgate serve`, then submit and follow jobs from another shell: "
    "`jobgate run -- echo hello`, `jobgate submit job.yaml`, `jobgate ls`.",
    epilog="Exit codes: 0 success; 1 a request or a job failed; 2 bad usage; "
    "124 `wait` timed out; `run` exits with its job's exit code.",
    no_args_is_help=True,
)

SERVER, JOBS, CONTROL = "Server", "Jobs", "Control"


@dataclass(slots=True)
class Globals:
    url: str | None = None
    token: str | None = None
    json: bool = False
    user: str | None = None
    cert: str | None = None
    key: str | None = None


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="JOBGATE_URL",
            help="Server to talk to, http(s)://… or unix:///path/of/socket (default: `url` in "
            "~/.config/jobgate/config.toml, else http://127.0.0.1:8000).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="JOBGATE_TOKEN",
            show_envvar=True,
            help="Bearer token (default: `token` in the config file).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of tables (for scripts).")
    ] = False,
    user: Annotated[
        str | None,
        typer.Option(
            envvar="JOBGATE_USER",
            show_envvar=True,
            help="HTTP basic user (the password comes from JOBGATE_PASSWORD or the config file).",
        ),
    ] = None,
    cert: Annotated[
        str | None,
        typer.Option(
            envvar="JOBGATE_CERT",
            show_envvar=True,
            help="Client certificate (PEM) for mutual TLS, or a proxy file holding the key too "
            "(default: `cert` in the config file, else $X509_USER_PROXY).",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="JOBGATE_KEY", show_envvar=True, help="Private key of --cert (PEM)."),
    ] = None,
) -> None:
    """jobgate: one front door to many compute systems."""
    ctx.obj = Globals(url, token, json_out, user, cert, key)


# -- plumbing ----------------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of tables (same as the global flag).")
]
Ids = Annotated[list[str], typer.Argument(metavar="ID...", help="Job ids.", show_default=False)]
Timeout = Annotated[
    float | None, typer.Option(help="Give up after this many seconds.", show_default=False)
]


def _globals(ctx: typer.Context) -> Globals:
    return ctx.find_object(Globals) or Globals()


def _as_json(ctx: typer.Context) -> bool:
    """The global ``--json`` or the command's own."""
    return _globals(ctx).json or bool(ctx.params.get("json_out"))


def _client(ctx: typer.Context) -> Client:
    from jobgate.client import Client

    g = _globals(ctx)
    return Client(g.url, g.token, user=g.user, cert=g.cert, key=g.key)


def client_errors() -> Any:
    """The client's error module (imported on first use)."""
    from jobgate.client import errors

    return errors


def default_image() -> str:
    from jobgate.domain.native import DEFAULT_IMAGE

    return DEFAULT_IMAGE


def api_command(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn client errors into a message on stderr and an exit code (no traceback).

    The command must take ``ctx: typer.Context`` (typer passes it by keyword).
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # typer passes its own (vendored click) Context: typed here, not isinstance-checked.
        ctx = cast(typer.Context, kwargs["ctx"])
        from jobgate.client import JobgateClientError, WaitTimeout

        try:
            return fn(*args, **kwargs)
        except WaitTimeout as exc:
            print_error(exc, _as_json(ctx))
            raise typer.Exit(EXIT_TIMEOUT) from None
        except JobgateClientError as exc:
            print_error(exc, _as_json(ctx))
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


def _wait(jg: Client, ids: Sequence[str], timeout: float | None) -> list[Job]:
    """``jg.wait`` with a progress bar on stderr (hidden when stderr is not a terminal)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from jobgate.client import State

    console = err()
    failed = 0
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        bar = progress.add_task("waiting", total=len(set(ids)))

        def on_final(job: Job) -> None:
            nonlocal failed
            failed += job.state != State.COMPLETE
            note = f" ([red]{failed} failed[/])" if failed else ""
            progress.update(bar, advance=1, description=f"waiting{note}")

        return jg.wait(ids, timeout, interval=1.0, on_final=on_final)


def _show_jobs(ctx: typer.Context, jobs: list[Job]) -> None:
    if _as_json(ctx):
        print_json(jobs)
    else:
        out().print(status_table(jobs))


def _filters(
    states: Sequence[str], name: str | None, labels: Sequence[str], group: str | None
) -> list[FilterInput]:
    from jobgate.client import State

    filters: list[FilterInput] = []
    wanted = [s.upper() for s in split_list(states)]
    unknown = [s for s in wanted if s not in State.__members__]
    if unknown:
        raise typer.BadParameter(
            f"unknown state {', '.join(unknown)}; one of {', '.join(State.__members__)}",
            param_hint="--state",
        )
    if wanted:
        filters.append(("state", "in", wanted))
    if name:
        filters.append(("name", "like" if any(c in name for c in "*?") else "eq", name))
    for key, value in parse_pairs(labels, "--label").items():
        filters.append((f"labels.{key}", "eq", value))
    if group:
        filters.append(("group", "eq", group))
    return filters


StateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--state",
        "-s",
        help="Only jobs in these states (repeat or comma-separate).",
        metavar="STATE",
    ),
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="Only jobs with this label (repeatable).", metavar="K=V"),
]
GroupOpt = Annotated[str | None, typer.Option(help="Only jobs of this group (a parametric sweep).")]


# -- server ------------------------------------------------------------------------------


@app.command(rich_help_panel=SERVER)
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the database and task directories live.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML or TOML file declaring named backends and their options "
            "(`jobgate backends` lists the kinds and options)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate to serve HTTPS with.", show_default=False)
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="PEM key of --tls-cert (default: in that file).", show_default=False),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM CA bundle whose client certificates are accepted (with JOBGATE_AUTH=x509).",
            show_default=False,
        ),
    ] = None,
    uds: Annotated[
        Path | None,
        typer.Option(help="Also serve on this UNIX socket (mode 0600).", show_default=False),
    ] = None,
    tcp: Annotated[
        bool | None,
        typer.Option(
            "--tcp/--no-tcp", help="Listen on --host/--port (default: yes).", show_default=False
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API worker processes sharing the port; with more than one, jobs run in "
            "--dispatchers separate dispatcher processes.",
        ),
    ] = 1,
    dispatchers: Annotated[
        int,
        typer.Option(min=0, help="Dispatcher processes beside --workers > 1 (0: none)."),
    ] = 1,
    dispatch: Annotated[
        bool,
        typer.Option(
            "--dispatch/--no-dispatch",
            help="Run jobs in this process (--no-dispatch: the API only; jobs run in "
            "`jobgate dispatcher` processes on the same database).",
        ),
    ] = True,
    worker_index: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the API and the dispatcher in one process (SQLite + local backend by default).

    Every option also comes from the environment: JOBGATE_HOST, JOBGATE_PORT,
    JOBGATE_DATA_DIR, JOBGATE_DATABASE_URL, JOBGATE_ALLOWED_DIRS, JOBGATE_RUNTIME,
    JOBGATE_SLOTS, JOBGATE_CONFIG_FILE, JOBGATE_TLS_CERT, JOBGATE_TLS_KEY,
    JOBGATE_TLS_CLIENT_CA, JOBGATE_UDS, JOBGATE_TCP; JOBGATE_BACKEND=slurm makes Slurm the
    default backend (JOBGATE_SLURM_SHARED_DIR: the job directory root the nodes see).
    """
    from jobgate.api.app import create_app
    from jobgate.api.server import serve as run_server
    from jobgate.config import Settings

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "config_file": config,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "tls_client_ca": tls_client_ca,
            "uds": uds,
        }.items()
        if v
    }
    if tcp is not None:
        overrides["tcp"] = tcp
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if workers > 1:
        raise typer.Exit(_supervise(overrides, workers, dispatchers if dispatch else 0, log_level))
    try:
        settings = Settings(**overrides)
        asgi = create_app(settings, dispatch=dispatch, shared=not dispatch)
    except ValueError as exc:  # pydantic's ValidationError is one too
        err().print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    try:
        run_server(asgi, settings, log_level=log_level, worker=worker_index)
    except ValueError as exc:  # limits that cannot be met, TLS files, the socket path
        err().print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _supervise(overrides: dict[str, Any], workers: int, dispatchers: int, log_level: str) -> int:
    import asyncio

    from jobgate.api.processes import Supervisor, child_command, child_environment, prepare
    from jobgate.config import Settings

    try:
        settings = Settings(**overrides)
        if not settings.tcp:
            raise ValueError("--workers needs TCP (--tcp): the workers share its port")
        asyncio.run(prepare(settings))
    except ValueError as exc:
        err().print(f"error: {exc}", markup=False, highlight=False)
        return 2
    child_environment(overrides)
    common = ["--log-level", log_level]
    api = [
        child_command(["serve", "--no-dispatch", "--worker-index", str(i), *common])
        for i in range(workers)
    ]
    runners = [child_command(["dispatcher", *common]) for _ in range(dispatchers)]
    return Supervisor(api, runners).run()


@app.command(rich_help_panel=SERVER)
def dispatcher(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the database and task directories live.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    config: Annotated[
        Path | None,
        typer.Option(help="YAML or TOML file declaring named backends and their options."),
    ] = None,
) -> None:
    """Run a dispatcher alone: claim jobs from the database and run them (no API).

    Several may run at once, on one host or many (PostgreSQL), beside `jobgate serve
    --no-dispatch` API processes; each holds a lease (JOBGATE_LEASE_SECONDS), so the jobs
    of one that dies are taken up by another. Settings come from the environment as for
    `jobgate serve`.
    """
    from jobgate.api.processes import dispatcher_main
    from jobgate.config import Settings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {
        k: v for k, v in {"data_dir": data_dir, "config_file": config}.items() if v
    }
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        err().print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    dispatcher_main(settings)


@app.command(rich_help_panel=SERVER)
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command("backends", rich_help_panel=SERVER)
def backend_kinds(
    ctx: typer.Context,
    json_out: JsonFlag = False,
    schema: Annotated[
        bool,
        typer.Option("--schema", help="Print the config file's JSON schema (for editors)."),
    ] = False,
) -> None:
    """List the backend kinds this installation has (a config file's `type`), whether each
    is available (else why not), and the options each takes in `serve --config FILE`.

    Reads this machine's installation, not a server: kinds come from the
    `jobgate.backends` entry points of the installed packages.
    """
    from rich.markup import escape

    from jobgate.backends import config_file, registry

    found = registry.catalog()
    if schema:
        print_json(config_file.file_model(found).model_json_schema())
        return
    kinds = found.describe()
    if _as_json(ctx):
        print_json(kinds)
        return
    console = out()
    for kind in kinds:
        console.print()
        if not kind["available"]:
            # Names, summaries and errors come from installed packages: never markup.
            name = escape(kind["kind"])
            console.print(f"[bold]{name}[/bold]  [red]unavailable[/red]: ", end="")
            console.print(kind["error"], markup=False, highlight=False)
            continue
        name, summary = escape(kind["kind"]), escape(kind["summary"])
        console.print(f"[bold]{name}[/bold]  {summary}", highlight=False)
        for opt in kind["options"]:
            default = "required" if opt["required"] else f"default {opt['default']}"
            console.print(
                f"  {opt['name']}: {opt['type']} ({default})", markup=False, highlight=False
            )
            if opt["description"]:
                console.print(f"      {opt['description']}", markup=False, highlight=False)


# -- submitting --------------------------------------------------------------------------


@app.command(rich_help_panel=JOBS)
@api_command
def submit(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-",
            help="YAML or JSON: one job, a list of jobs, or {job: ..., parameters: ...}. "
            "- reads stdin.",
            show_default=False,
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUES",
            help="Submit one job per value: i=0..9 (inclusive range; 0..9..2 steps by 2) "
            "or s=a,b,c. Repeat for every combination. Use {{ NAME }} in the job.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait until the jobs end; fail if any fails.")
    ] = False,
    timeout: Timeout = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Resubmitting with the same key returns the first jobs."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Submit jobs from a file; prints their ids.

    A job is a mapping such as:

        name: hello
        script: echo hello from $HOSTNAME
        labels: {project: demo}

    (or TES `executors`, `inputs`, `outputs`, `resources`, plus `priority` and `hold`).
    """
    doc = read_document(file)
    params: dict[str, Any] = parse_params(param or [])
    if isinstance(doc, dict) and "job" in doc and "parameters" in doc:
        params = {**doc["parameters"], **params}
        doc = doc["job"]
    if params and not isinstance(doc, dict):
        raise typer.BadParameter("--param needs a file with one job (a mapping)")
    with _client(ctx) as jg:
        if params:
            result = jg.submit_parametric(doc, params, idempotency_key=idempotency_key)
        elif isinstance(doc, list) or (isinstance(doc, dict) and "jobs" in doc):
            jobs = doc["jobs"] if isinstance(doc, dict) else doc
            if not isinstance(jobs, list):
                raise typer.BadParameter("`jobs` must be a list of jobs")
            result = jg.submit_bulk(jobs, idempotency_key=idempotency_key)
        elif isinstance(doc, dict):
            job = jg.submit(doc, idempotency_key=idempotency_key)
            _after_submit(ctx, jg, [job.id], single=job, wait=wait, timeout=timeout)
            return
        else:
            raise typer.BadParameter(f"{file} holds no job (expected a mapping or a list)")
        if _as_json(ctx) and not wait:
            print_json(result)
        else:
            print_bulk(result, only_failed=True)
            note = f" in group {result.group}" if result.group else ""
            err().print(f"submitted {len(result.ids)} of {len(result)} jobs{note}")
        if result.ids:
            _after_submit(ctx, jg, result.ids, single=None, wait=wait, timeout=timeout)
        if result.failed:
            raise typer.Exit(EXIT_FAILED)


def _after_submit(
    ctx: typer.Context,
    jg: Client,
    ids: list[str],
    *,
    single: Job | None,
    wait: bool,
    timeout: float | None,
) -> None:
    if wait:
        jobs = _wait(jg, ids, timeout)
        if single is not None and _as_json(ctx):
            print_json(jobs[0])
        else:
            _show_jobs(ctx, jobs)
        if not all(j.ok for j in jobs):
            raise typer.Exit(EXIT_FAILED)
    elif single is not None and _as_json(ctx):
        print_json(single)
    elif not _as_json(ctx):
        for job_id in ids:
            typer.echo(job_id)


@app.command(
    rich_help_panel=JOBS,
    context_settings={"allow_interspersed_args": False},
)
@api_command
def run(
    ctx: typer.Context,
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="CMD", help="The command and its arguments (after --).", show_default=False
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Job name (default: the command).")] = None,
    image: Annotated[str | None, typer.Option(help="Container image, where supported.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", metavar="K=V", help="Environment.")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", metavar="K=V", help="Label.")
    ] = None,
    cpus: Annotated[int | None, typer.Option(min=1, help="CPU cores.")] = None,
    ram_gb: Annotated[float | None, typer.Option(help="Memory limit in GB.")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Cancel the job and exit 124 after this many seconds."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Run one command as a job, print its output and exit with its exit code.

    Example: jobgate run -- sh -c 'echo hello; uname -a'. Stdout is shown as it is
    written (with --timeout or --json: at the end), stderr when the job ends. Ctrl-C
    cancels the job.
    """
    job: dict[str, Any] = {
        "name": name or shlex.join(command)[:200],
        "executors": [{"image": image or default_image(), "command": command}],
    }
    if env:
        job["executors"][0]["env"] = parse_pairs(env, "--env")
    if label:
        job["labels"] = parse_pairs(label, "--label")
    resources = {k: v for k, v in {"cpu_cores": cpus, "ram_gb": ram_gb}.items() if v}
    if resources:
        job["resources"] = resources
    live = timeout is None and not _as_json(ctx)
    with _client(ctx) as jg:
        job_id = jg.submit(job).id
        try:
            if live:
                _copy(jg.logs(job_id, follow=True), sys.stdout)
            done = jg.wait(job_id, timeout, interval=0.5)
        except (KeyboardInterrupt, client_errors().WaitTimeout) as exc:
            jg.cancel(job_id)
            if isinstance(exc, client_errors().WaitTimeout):
                raise
            err().print(f"canceled job {job_id}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if _as_json(ctx):
            print_json(done)
        else:
            if not live:
                _copy(jg.logs(job_id), sys.stdout)
            _copy(jg.logs(job_id, stream="stderr"), sys.stderr)
    if done.ok:
        return
    if done.exit_code:
        raise typer.Exit(done.exit_code)
    reason = "; ".join(filter(None, [done.detail, *done.system_logs]))
    err().print(f"job {job_id} ended {state_text(done.state)}: {reason}")
    raise typer.Exit(EXIT_FAILED)


def _copy(chunks: Iterable[str], stream: TextIO) -> None:
    for chunk in chunks:
        stream.write(chunk)
        stream.flush()


# -- reading -----------------------------------------------------------------------------


@app.command("ls", rich_help_panel=JOBS)
@api_command
def list_jobs(
    ctx: typer.Context,
    state: StateOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Name, or a pattern with * and ?.")
    ] = None,
    label: LabelOpt = None,
    group: GroupOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only ids.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """List jobs, newest first.

    Example: jobgate ls --state EXECUTOR_ERROR,SYSTEM_ERROR -l project=demo
    """
    filters = _filters(state or [], name, label or [], group)
    with _client(ctx) as jg:
        rows = list(jg.iter_search(filters, page_size=min(limit, 500), max_items=limit))
    if _as_json(ctx):
        print_json(rows)
    elif quiet:
        for row in rows:
            typer.echo(row["id"])
    elif rows:
        out().print(jobs_table(rows))
    else:
        err().print("no jobs match")


@app.command(rich_help_panel=JOBS)
@api_command
def status(ctx: typer.Context, ids: Ids, json_out: JsonFlag = False) -> None:
    """Show jobs: state, exit code, last change. Exits 1 if an id is unknown."""
    jobs, missing = [], False
    with _client(ctx) as jg:
        for job_id in ids:
            try:
                jobs.append(jg.get(job_id))
            except client_errors().ApiError as exc:  # this id; a connection failure ends it
                print_error(exc, _as_json(ctx))
                missing = True
    if jobs or not missing:
        _show_jobs(ctx, jobs)
    if missing:
        raise typer.Exit(EXIT_FAILED)


@app.command(rich_help_panel=JOBS)
@api_command
def logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id.", show_default=False)],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr, not stdout.")] = False,
    executor: Annotated[
        int, typer.Option(min=0, help="Which executor's output (0 is the first).")
    ] = 0,
) -> None:
    """Print a job's output (stdout, or stderr with --stderr)."""
    stream: Stream = "stderr" if stderr else "stdout"
    with _client(ctx) as jg:
        try:
            _copy(jg.logs(job_id, stream=stream, follow=follow, executor=executor), sys.stdout)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command(rich_help_panel=JOBS)
@api_command
def wait(ctx: typer.Context, ids: Ids, timeout: Timeout = None, json_out: JsonFlag = False) -> None:
    """Wait until jobs end; exits 0 if all COMPLETE, 1 if any failed, 124 on timeout."""
    with _client(ctx) as jg:
        jobs = _wait(jg, ids, timeout)
    _show_jobs(ctx, jobs)
    if not all(j.ok for j in jobs):
        raise typer.Exit(EXIT_FAILED)


@app.command(rich_help_panel=JOBS)
@api_command
def events(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id.", show_default=False)],
    json_out: JsonFlag = False,
) -> None:
    """Show a job's status history."""
    with _client(ctx) as jg:
        history = jg.events(job_id)
    if _as_json(ctx):
        print_json(history)
    else:
        out().print(events_table(history))


@app.command(rich_help_panel=JOBS)
@api_command
def summary(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option(help="Fields to count by, e.g. state,owner or labels.project.")
    ] = "state",
    state: StateOpt = None,
    label: LabelOpt = None,
    group: GroupOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Count jobs per state (or per any fields)."""
    fields = split_list([by])
    with _client(ctx) as jg:
        groups = jg.summary(fields, _filters(state or [], None, label or [], group))
    if _as_json(ctx):
        print_json(groups)
    else:
        out().print(summary_table(groups, fields))


# -- control -----------------------------------------------------------------------------


def _bulk(ctx: typer.Context, action: str, ids: Sequence[str]) -> None:
    with _client(ctx) as jg:
        do = {
            "cancel": jg.cancel_many,
            "reschedule": jg.reschedule_many,
            "start": jg.start_many,
            "delete": jg.delete_many,
        }[action]
        result = do(list(ids))
    if _as_json(ctx):
        print_json(result)
    else:
        print_bulk(result, ids, done=f"{action}d")
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


@app.command(rich_help_panel=CONTROL)
@api_command
def cancel(ctx: typer.Context, ids: Ids, json_out: JsonFlag = False) -> None:
    """Cancel jobs (finished ones stay as they are)."""
    _bulk(ctx, "cancel", ids)


@app.command(rich_help_panel=CONTROL)
@api_command
def reschedule(ctx: typer.Context, ids: Ids, json_out: JsonFlag = False) -> None:
    """Run failed or canceled jobs again."""
    _bulk(ctx, "reschedule", ids)


@app.command(rich_help_panel=CONTROL)
@api_command
def start(ctx: typer.Context, ids: Ids, json_out: JsonFlag = False) -> None:
    """Queue jobs that were submitted with `hold: true`."""
    _bulk(ctx, "start", ids)


@app.command(rich_help_panel=CONTROL)
@api_command
def delete(ctx: typer.Context, ids: Ids, json_out: JsonFlag = False) -> None:
    """Delete finished (or held) jobs with their history and data."""
    _bulk(ctx, "delete", ids)


# -- access: who am I, service tokens, basic users -----------------------------------------

ACCESS = "Access"
token_app = typer.Typer(help="Service tokens (admins): create, list, revoke.", no_args_is_help=True)
user_app = typer.Typer(help="Basic-auth users (JOBGATE_BASIC_USERS_FILE).", no_args_is_help=True)
app.add_typer(token_app, name="token", rich_help_panel=ACCESS)
app.add_typer(user_app, name="user", rich_help_panel=ACCESS)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int | None:
    """``90d``, ``12h``, ``30m``, ``3600`` (seconds) → seconds; ``never`` → None."""
    text = text.strip().lower()
    if text in ("never", "none", "0"):
        return None
    unit = _UNITS.get(text[-1:])
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise typer.BadParameter(
            f"{text!r}: use a number with s, m, h, d or w (90d), or never", param_hint="--expires"
        )
    return int(seconds)


@app.command(rich_help_panel=ACCESS)
@api_command
def whoami(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Who the server takes you for: name, how you authenticated, scopes, groups."""
    with _client(ctx) as jg:
        me = jg.whoami()
    if _as_json(ctx):
        print_json(me)
    else:
        out().print(
            f"{me['name'] or '(anonymous)'} via {me['method']}; scopes: "
            f"{', '.join(me['scopes'])}; groups: {', '.join(me['groups']) or '-'}"
        )


@token_app.command("create")
@api_command
def token_create(
    ctx: typer.Context,
    owner: Annotated[
        str | None,
        typer.Option(
            help="Owner the token acts as: iam:alice, basic:carol as written; "
            "a bare name is the robot token:<name> (default: you)."
        ),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", help="read, submit or admin (repeatable; default submit).", metavar="SCOPE"
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label to recognise the token by.")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Group the token's caller is in.")
    ] = None,
    expires: Annotated[str, typer.Option(help="Lifetime: 90d, 12h, 30m… or never.")] = "90d",
    json_out: JsonFlag = False,
) -> None:
    """Create a service token. It is printed once: only its hash is kept."""
    scopes = split_list(scope or ["submit"])
    with _client(ctx) as jg:
        row = jg.token_create(
            owner=owner,
            scopes=scopes,
            name=name,
            groups=split_list(group or []),
            expires_in=parse_duration(expires),
        )
    if _as_json(ctx):
        print_json(row)
        return
    err().print(
        f"token {row['id']} for {row['owner']} ({', '.join(row['scopes'])}), expires "
        f"{row['expires_at'] or 'never'}; store it now, it is not shown again:"
    )
    typer.echo(row["token"])


@token_app.command("list")
@api_command
def token_list(
    ctx: typer.Context,
    all_tokens: Annotated[
        bool, typer.Option("--all", help="Include expired and revoked tokens.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Service tokens (never their secrets)."""
    with _client(ctx) as jg:
        rows = jg.token_list(include_inactive=all_tokens)
    if _as_json(ctx):
        print_json(rows)
        return
    from rich.table import Table

    table = Table("ID", "OWNER", "SCOPES", "NAME", "EXPIRES", "REVOKED")
    for r in rows:
        table.add_row(
            r["id"],
            r["owner"],
            ",".join(r["scopes"]),
            r["name"] or "",
            r["expires_at"] or "never",
            r["revoked_at"] or "",
        )
    out().print(table)


@token_app.command("revoke")
@api_command
def token_revoke(
    ctx: typer.Context,
    token_ids: Annotated[list[str], typer.Argument(metavar="TOKEN_ID...", show_default=False)],
    json_out: JsonFlag = False,
) -> None:
    """Revoke service tokens by id (from `jobgate token list`); they stop working at once."""
    with _client(ctx) as jg:
        rows = [jg.token_revoke(t) for t in token_ids]
    if _as_json(ctx):
        print_json(rows)
    else:
        for r in rows:
            out().print(f"revoked {r['id']} ({r['owner']})")


@user_app.command("set")
def user_set(
    file: Annotated[Path, typer.Argument(help="The users file (created 0600 if missing).")],
    name: Annotated[str, typer.Argument(help="User name.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group of the user (repeatable).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Add a user to a basic-auth users file, or change their password and groups."""
    from jobgate.auth.basic import UsersFileError, set_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise typer.BadParameter("the password must not be empty")
    try:
        set_user(file, name, password, split_list(group or []))
    except UsersFileError as exc:
        raise typer.BadParameter(str(exc)) from None
    err().print(f"{name} set in {file}")


if __name__ == "__main__":
    app()
