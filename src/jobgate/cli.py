"""The ``jobgate`` command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from jobgate import __version__

app = typer.Typer(help="jobgate: one front door to many compute systems.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the database and task directories live.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the API and the dispatcher in one process (SQLite + local backend by default).

    Every option also comes from the environment: JOBGATE_HOST, JOBGATE_PORT,
    JOBGATE_DATA_DIR, JOBGATE_DATABASE_URL, JOBGATE_ALLOWED_DIRS, JOBGATE_RUNTIME,
    JOBGATE_SLOTS.
    """
    import uvicorn

    from jobgate.api.app import create_app
    from jobgate.config import Settings

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items() if v
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
    )


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
