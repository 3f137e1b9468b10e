"""Helpers of the ``jobgate`` CLI: option parsing and output (rich tables or JSON).

Human output goes through rich; ``--json`` output is plain JSON on stdout, one document
per command, so scripts can pipe it to ``jq``. Errors always go to stderr.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# typer (and the client) load where they are used: ``jobgate.cli_fast`` prints tables and
# errors through this module without importing either.
if TYPE_CHECKING:
    from jobgate.client import BulkResult, Event, Job, JobgateClientError

STATE_STYLE = {
    "COMPLETE": "green",
    "EXECUTOR_ERROR": "red",
    "SYSTEM_ERROR": "bold red",
    "CANCELED": "dim",
    "CANCELING": "yellow",
    "PREEMPTED": "magenta",
    "RUNNING": "cyan",
    "INITIALIZING": "cyan",
    "QUEUED": "yellow",
    "PAUSED": "blue",
    "UNKNOWN": "magenta",
}
RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?")


PIPE_WIDTH = 200
"""Line width when not writing to a terminal: one row per line, for grep and friends."""


def _console(stderr: bool) -> Console:
    # Made per call: CliRunner (and redirections) swap sys.stdout between commands.
    # No emoji codes: a job named ``:fire:`` is shown as written (and rich's emoji table,
    # a large module, is not loaded).
    console = Console(stderr=stderr, highlight=False, emoji=False)
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    return console


def out() -> Console:
    return _console(stderr=False)


def err() -> Console:
    return _console(stderr=True)


# -- parsing -----------------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, list[str] | dict[str, int]]:
    """``i=0..9`` (inclusive; ``0..9..2`` steps by 2) or ``s=a,b,c`` → (name, values)."""
    import typer

    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise typer.BadParameter(
            f"{text!r}: expected NAME=VALUES, e.g. i=0..9 or s=a,b,c", param_hint="--param"
        )
    m = RANGE.fullmatch(values.strip())
    if m:
        start, end, step = int(m[1]), int(m[2]), int(m[3] or 1)
        if end < start or step < 1:
            raise typer.BadParameter(
                f"{text!r}: a range goes up, like 0..9 or 0..9..2", param_hint="--param"
            )
        return name, {"start": start, "stop": end + 1, "step": step}
    items = [v.strip() for v in values.split(",")]
    if not values.strip() or not all(items):
        raise typer.BadParameter(f"{text!r}: empty value in the list", param_hint="--param")
    return name, items


def parse_params(texts: Sequence[str]) -> dict[str, list[str] | dict[str, int]]:
    import typer

    params: dict[str, list[str] | dict[str, int]] = {}
    for text in texts:
        name, values = parse_param(text)
        if name in params:
            raise typer.BadParameter(f"parameter {name!r} given twice", param_hint="--param")
        params[name] = values
    return params


def parse_pairs(texts: Sequence[str], what: str) -> dict[str, str]:
    """``k=v`` options (``--label``, ``--env``) as a dict."""
    import typer

    pairs = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint=what)
        pairs[key] = value
    return pairs


def split_list(values: Sequence[str]) -> list[str]:
    """Repeated and comma-separated values (``--state A,B --state C``) as one list."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def read_document(source: str) -> Any:
    """A YAML or JSON document from a file path, or stdin for ``-``."""
    import typer
    import yaml

    try:
        text = sys.stdin.read() if source == "-" else open(source).read()  # noqa: SIM115
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {source}: {exc.strerror}", param_hint="FILE"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise typer.BadParameter(
            f"{source} is not valid YAML or JSON: {exc}", param_hint="FILE"
        ) from exc


# -- output ------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    from jobgate.client import BulkResult, Event, Job

    if isinstance(value, Job | Event):
        return value.model_dump(mode="json")
    if isinstance(value, BulkResult):
        return {
            "group": value.group,
            "results": [bulk_item_json(i.index, i.id, i.state, i.error) for i in value],
            "succeeded": len(value.succeeded),
            "failed": len(value.failed),
        }
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def bulk_item_json(
    index: int, job_id: str | None, state: Any, error: JobgateClientError | None
) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index, "id": job_id, "state": state}
    if error is not None:
        item["error"] = error_json(error)
    return item


def error_json(exc: JobgateClientError) -> dict[str, Any]:
    return {
        "code": exc.code,
        "status": exc.status,
        "message": exc.message,
        "errors": [{"where": e.where, "what": e.what} for e in exc.errors],
    }


def print_json(value: Any) -> None:
    import typer

    typer.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False, default=str))


def print_error(exc: JobgateClientError, as_json: bool) -> None:
    if as_json:
        import typer

        typer.echo(json.dumps({"error": error_json(exc)}, ensure_ascii=False), err=True)
    else:
        err().print(f"[bold red]error:[/] {escape(str(exc))}")


def state_text(state: Any) -> str:
    name = str(state) if state is not None else "-"
    style = STATE_STYLE.get(name)
    return f"[{style}]{name}[/]" if style else escape(name)


def when(value: datetime | str | None) -> str:
    """A timestamp in local time, to the second."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in columns:
        if name == "ID":
            table.add_column(name, no_wrap=True, min_width=36)
        elif name in ("DETAIL", "NAME"):
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, no_wrap=True)
    return table


def jobs_table(rows: Iterable[dict[str, Any]]) -> Table:
    """Search rows (dicts of the default fields) as a table."""
    table = _table("ID", "STATE", "NAME", "CREATED", "DETAIL")
    for row in rows:
        table.add_row(
            row.get("id", "-"),
            state_text(row.get("state")),
            escape(row.get("name") or ""),
            when(row.get("created_at")),
            escape(row.get("detail") or ""),
        )
    return table


def status_table(jobs: Iterable[Job | Mapping[str, Any]]) -> Table:
    """Jobs (the client's, or the server's JSON of ``GET /jobs/{id}``) as a table."""
    table = _table("ID", "STATE", "NAME", "EXIT", "UPDATED", "DETAIL")
    for job in jobs:
        if isinstance(job, Mapping):
            fields, exit_code = job, json_exit_code(job)
        else:
            fields, exit_code = vars(job), job.exit_code
        table.add_row(
            fields["id"],
            state_text(fields["state"]),
            escape(fields.get("name") or ""),
            "-" if exit_code is None else str(exit_code),
            when(fields.get("updated_at") or fields.get("created_at")),
            escape(fields.get("detail") or ""),
        )
    return table


def json_exit_code(job: Mapping[str, Any]) -> int | None:
    """:attr:`jobgate.client.Job.exit_code` read from the job's JSON."""
    attempts = job.get("logs") or []
    executors = (attempts[-1].get("logs") or []) if attempts else []
    code = executors[-1].get("exit_code") if executors else None
    return code if isinstance(code, int) else None


def events_table(events: Iterable[Event]) -> Table:
    table = _table("AT", "FROM", "STATE", "SOURCE", "DETAIL")
    for e in events:
        table.add_row(
            when(e.at),
            state_text(e.from_state) if e.from_state else "",
            state_text(e.state),
            escape(e.source or ""),
            escape(e.detail or ""),
        )
    return table


def summary_table(groups: Sequence[dict[str, Any]], by: Sequence[str]) -> Table:
    table = _table(*(b.upper() for b in by), "COUNT")
    for group in groups:
        cells = [
            state_text(group.get(b)) if b == "state" else escape(str(group.get(b) or "-"))
            for b in by
        ]
        table.add_row(*cells, str(group.get("count", 0)))
    return table


def print_bulk(
    result: BulkResult,
    ids: Sequence[str | None] | None = None,
    *,
    only_failed: bool = False,
    done: str = "done",
) -> None:
    """One line per item: ``ID  STATE`` on stdout, or ``ID  error: …`` on stderr."""
    console, errors = out(), err()
    for item in result.failed if only_failed else result:
        label = item.id or (ids[item.index] if ids else None) or f"item {item.index}"
        if item.error is None:
            state = state_text(item.state) if item.state else done
            console.print(f"{escape(label)}  {state}")
        else:
            first = str(item.error).splitlines()[0]
            errors.print(f"{escape(label)}  [red]error:[/] {escape(first)}")
            for detail in item.error.errors[:5]:
                errors.print(f"    {escape(str(detail))}")
