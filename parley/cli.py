"""The ``parley`` command: serve, db, keys."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from parley.config import Settings

app = typer.Typer(
    help="Parley: a self-hosted AI assistant server.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
T = TypeVar("T")


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
    from parley.keys import InsecureBind, check_bind

    try:
        check_bind(settings)
    except InsecureBind as exc:
        typer.echo(f"parley: {exc}", err=True)
        raise typer.Exit(2) from None
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


def _with_db(action: Callable[..., Awaitable[T]]) -> T:
    """Run ``action(db)`` against the configured database, migrated first."""
    from parley.store.db import Database

    settings = Settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> T:
        db = Database(settings.resolved_database_url)
        try:
            await db.upgrade()
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(run())


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="The user the key acts as (created if new).")],
    admin: Annotated[bool, typer.Option("--admin", help="The user is an administrator.")] = False,
    name: Annotated[str | None, typer.Option(help="A label for the key, e.g. the machine using it.")] = None,
) -> None:
    """Create an API key. It is printed once: only its hash is stored."""
    from parley.keys import create_key

    issued = _with_db(lambda db: create_key(db, user, admin=admin, name=name))
    typer.echo(issued.secret)
    role = "admin" if issued.info.is_admin else "user"
    typer.echo(
        f"key {issued.info.id} for {role} {issued.info.user!r}; store it now, it is not shown again", err=True
    )


@keys_app.command("list")
def keys_list(user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None) -> None:
    """List keys (never their secrets)."""
    from parley.keys import list_keys

    keys = _with_db(lambda db: list_keys(db, user))
    typer.echo(f"{'ID':32} {'PREFIX':14} {'USER':16} {'ADMIN':5} {'CREATED':16} {'LAST USED':16} REVOKED")
    for k in keys:
        typer.echo(
            f"{k.id:32} {k.prefix:14} {k.user[:16]:16} {'yes' if k.is_admin else 'no':5} "
            f"{_when(k.created_at):16} {_when(k.last_used_at):16} {_when(k.revoked_at)}"
        )


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id (key_...) or its prefix.")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from parley.keys import revoke_key

    info = _with_db(lambda db: revoke_key(db, key))
    if info is None:
        typer.echo(f"parley: no key {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {info.id} ({info.prefix}) of {info.user!r}")


def main() -> None:
    app()
