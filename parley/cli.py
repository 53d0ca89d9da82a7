"""The ``parley`` command: serve, ingest, db."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from parley.config import Settings

app = typer.Typer(
    help="Parley: a self-hosted AI assistant server.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: PARLEY_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PARLEY_PORT or 8000).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (PARLEY_DATA_DIR).")] = None,
    model: Annotated[str | None, typer.Option(help="Default model route (PARLEY_MODEL).")] = None,
) -> None:
    """Run the server."""
    import uvicorn

    from parley.app import create_app
    from parley.logs import configure

    overrides = {
        k: v for k, v in {"host": host, "port": port, "data_dir": data_dir, "model": model}.items() if v
    }
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure(settings.log_level, settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders: Markdown, text, PDF.", exists=True)],
    kb: Annotated[str, typer.Option("--kb", help="Knowledge base name (created if missing).")],
    prune: Annotated[bool, typer.Option(help="Delete documents no longer among PATHS.")] = False,
) -> None:
    """Ingest files into a knowledge base of the local user; unchanged files are skipped."""
    import asyncio

    from parley.knowledge.cli import run_ingest

    raise typer.Exit(asyncio.run(run_ingest(Settings(), paths, kb, prune=prune)))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to PARLEY_DATABASE_URL (or the SQLite file in the data dir)."""
    from parley.store.db import upgrade_blocking

    settings = Settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_blocking(settings.resolved_database_url)
    typer.echo(f"database is up to date: {settings.resolved_database_url}")


def main() -> None:
    app()
