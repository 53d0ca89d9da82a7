"""The ``parley`` command: serve, db, import-products."""

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


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to PARLEY_DATABASE_URL (or the SQLite file in the data dir)."""
    from parley.store.db import upgrade_blocking

    settings = Settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_blocking(settings.resolved_database_url)
    typer.echo(f"database is up to date: {settings.resolved_database_url}")


@app.command("import-products")
def import_products(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A CSV file with a header row.")],
    map_: Annotated[
        list[str],
        typer.Option(
            "--map",
            help="FIELD=COLUMN (repeat, or comma-separate). Fields: id, name, category, price (required), "
            "description, brand, stock, rating, reviews_count, image_url, attributes.KEY. "
            "FIELD=A+B joins columns.",
        ),
    ],
    default_stock: Annotated[int, typer.Option(min=0, help="Stock of products without a stock column.")] = 10,
    replace: Annotated[bool, typer.Option(help="Empty the catalog (and every cart) first.")] = False,
) -> None:
    """Load products from a CSV file into the shop (upserted by id)."""
    import asyncio

    from parley.catalog import MappingError, import_csv, parse_map
    from parley.store.db import Database

    try:
        mapping = parse_map(map_)
    except MappingError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None
    settings = Settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        db = Database(settings.resolved_database_url)
        try:
            await db.upgrade()
            report = await import_csv(db, file, mapping, default_stock=default_stock, replace=replace)
        finally:
            await db.close()
        typer.echo(
            f"imported {report.imported} products from {file.name} "
            f"({report.duplicates} repeated ids kept once, {report.skipped} rows skipped)"
        )
        for problem in report.problems[:10]:
            typer.echo(f"  skipped {problem}", err=True)

    try:
        asyncio.run(run())
    except MappingError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None


def main() -> None:
    app()
