"""The ``parley`` command: serve, chat, ask, ingest, db, keys, import-products."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from parley.config import Settings

if TYPE_CHECKING:
    from parley.client import Answer, Client

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
    # Libraries' progress bars (tqdm) would be mixed into the log lines.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from parley import serving
    from parley.app import create_app
    from parley.logs import configure
    from parley.startup import load_env_file

    load_env_file()
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
    from parley.connections import check_fd_limit, guarded_http

    open_files = check_fd_limit()
    application = create_app(settings)
    serving.settle_process()
    serving.serve(
        application,
        settings,
        log_config=None,  # uvicorn's own lines go through parley.logs (JSON with the rest)
        timeout_keep_alive=settings.keep_alive_seconds,
        http=guarded_http(
            header_timeout=settings.header_timeout_seconds, per_client=settings.max_connections_per_client
        ),
        limit_concurrency=settings.max_connections or max(64, open_files - 256),
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Runs executing at once (default: PARLEY_MAX_CONCURRENT_RUNS or 32).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (GET /metrics).")
    ] = None,
) -> None:
    """Execute runs, without an HTTP server: any number of workers share PARLEY_DATABASE_URL
    (PostgreSQL) with any number of `parley serve` processes."""
    from parley import serving
    from parley.logs import configure

    overrides: dict[str, object] = {"worker": "on"}
    if concurrency is not None:
        overrides["max_concurrent_runs"] = concurrency
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.is_sqlite:
        _fail(
            "parley worker needs PostgreSQL (PARLEY_DATABASE_URL=postgresql+asyncpg://...): SQLite "
            "serves one process, so `parley serve` executes its runs itself"
        )
    configure(settings.log_level, settings.log_json)
    serving.run_worker(settings, metrics_port=metrics_port)


UrlOption = Annotated[
    str | None,
    typer.Option(
        help="Server to talk to (default: PARLEY_URL, or PARLEY_HOST:PARLEY_PORT; "
        "when nothing answers there, a server is started in this process)."
    ),
]
AssistantOption = Annotated[str, typer.Option("--assistant", "-a", help="Assistant to talk to.")]
ThreadOption = Annotated[str | None, typer.Option(help="Continue this thread instead of starting one.")]


@app.command()
def chat(assistant: AssistantOption = "general", url: UrlOption = None, thread: ThreadOption = None) -> None:
    """Chat in the terminal: replies stream, the thread is kept, Ctrl-C cancels a reply."""
    from parley.client import ClientError

    with _connected(url) as client, asyncio.Runner() as runner:
        try:
            thread_id = thread or runner.run(client.new_thread(assistant))
        except ClientError as exc:
            _fail(str(exc))
        typer.secho(
            f"Chatting with {assistant} (thread {thread_id}). Ctrl-C stops a reply, Ctrl-D quits.", dim=True
        )
        while True:
            try:
                line = input("you> ")
            except (EOFError, KeyboardInterrupt):
                typer.echo()
                break
            if not line.strip():
                continue
            try:
                runner.run(_answer(client, thread_id, line))
            except KeyboardInterrupt:
                if client.run_id is not None:
                    runner.run(client.cancel(client.run_id))
                typer.secho("\n[cancelled]", dim=True, err=True)
            except ClientError as exc:
                typer.secho(f"error: {exc}", fg="red", err=True)
        runner.run(client.aclose())


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    assistant: AssistantOption = "general",
    url: UrlOption = None,
    thread: ThreadOption = None,
) -> None:
    """Ask one question and print the answer."""
    from parley.client import ClientError

    with _connected(url) as client, asyncio.Runner() as runner:
        try:
            thread_id = thread or runner.run(client.new_thread(assistant))
            answer = runner.run(_answer(client, thread_id, question, prompt=""))
        except KeyboardInterrupt:
            if client.run_id is not None:
                runner.run(client.cancel(client.run_id))
            raise typer.Exit(130) from None
        except ClientError as exc:
            _fail(str(exc))
        finally:
            runner.run(client.aclose())
    if answer.error is not None or answer.cancelled:
        raise typer.Exit(1)


async def _answer(client: Client, thread_id: str, text: str, *, prompt: str = "parley> ") -> Answer:
    """Stream one reply to stdout, with tool results as tables and the sources under it; a
    spinner on stderr until the first token; usage, fallbacks and errors go to stderr."""
    from parley import terminal
    from parley.client import Answer

    answer = Answer()
    out = _Output(prompt)
    spinner = terminal.Spinner().start()
    try:
        async for event in client.stream(thread_id, text):
            if event.type == "message.delta":
                spinner.stop()
                answer.text += event.data["text"]
                out.text(event.data["text"])
            elif event.type == "tool.result" and (lines := terminal.tool_result(event.data.get("ui"))):
                spinner.stop()
                out.block(lines)
                spinner = terminal.Spinner("writing").start()
            elif event.type == "provider.fallback":
                spinner.stop()
                answer.fallbacks.append(event.data)
                typer.secho(
                    f"[{event.data['from']} failed; {event.data['to']} takes over]", dim=True, err=True
                )
            elif event.type == "run.completed":
                answer.usage = event.data.get("usage") or {}
                answer.sources = event.data.get("sources") or []
            elif event.type == "run.failed":
                answer.error = event.data.get("error") or {}
            elif event.type == "run.cancelled":
                answer.cancelled = True
    finally:
        spinner.stop()
    out.end()
    if answer.sources and answer.text:
        out.block(terminal.sources(answer.sources))
    if answer.error is not None:
        typer.secho(f"error: {answer.error.get('message', 'the run failed')}", fg="red", err=True)
    elif answer.usage:
        typer.secho(_usage_line(answer.usage), dim=True, err=True)
    return answer


class _Output:
    """The reply on stdout: its prompt before the first text, tables on lines of their own."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.prompted = False
        self.line_open = False

    def text(self, piece: str) -> None:
        if not self.prompted:
            sys.stdout.write(self.prompt)
            self.prompted = True
        sys.stdout.write(piece)
        sys.stdout.flush()
        self.line_open = not piece.endswith("\n")

    def block(self, lines: list[str]) -> None:
        if self.line_open:
            sys.stdout.write("\n")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        self.line_open = False

    def end(self) -> None:
        if not self.prompted:  # no text at all: the prompt and an empty line, as for an empty reply
            sys.stdout.write(self.prompt)
            self.prompted = self.line_open = True
        if self.line_open:
            sys.stdout.write("\n")
        sys.stdout.flush()
        self.line_open = False


def _usage_line(usage: dict[str, object]) -> str:
    cost = usage.get("cost_usd")
    parts = [
        f"{usage.get('input_tokens', 0)} tokens in, {usage.get('output_tokens', 0)} out",
        "cost unknown" if cost is None else f"${cost:.6f}",
    ]
    if usage.get("ttft_ms") is not None:
        parts.append(f"first token {float(str(usage['ttft_ms'])) / 1000:.2f}s")
    parts.append(f"{float(str(usage.get('latency_ms', 0))) / 1000:.2f}s")
    return "(" + " · ".join(parts) + ")"


@contextmanager
def _connected(url: str | None) -> Iterator[Client]:
    """A client of the server at ``url``; without one, of a reachable or an in-process server."""
    from parley.client import Client, background_server
    from parley.startup import load_env_file

    load_env_file()
    settings = Settings()
    api_key = os.environ.get("PARLEY_API_KEY")
    target = url or os.environ.get("PARLEY_URL") or f"http://{settings.host}:{settings.port}"
    if asyncio.run(_probe(Client(target, api_key=api_key))):
        yield Client(target, api_key=api_key)
        return
    if url is not None:
        _fail(f"no Parley server answers at {url}")
    from parley.logs import configure

    configure("ERROR", json_logs=False)
    typer.secho(f"(no server at {target}; starting one in this process)", dim=True, err=True)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    with background_server(settings) as local_url:
        yield Client(local_url, api_key=api_key)


async def _probe(client: Client) -> bool:
    try:
        return await client.reachable()
    finally:
        await client.aclose()


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders: Markdown, text, PDF.", exists=True)],
    kb: Annotated[str, typer.Option("--kb", help="Knowledge base name (created if missing).")],
    prune: Annotated[bool, typer.Option(help="Delete documents no longer among PATHS.")] = False,
    url: Annotated[
        str | None,
        typer.Option(
            help="Send the files to this running server as one batch (a zip; API key: PARLEY_API_KEY) "
            "and follow its job; default: write to the database directly."
        ),
    ] = None,
) -> None:
    """Ingest files into a knowledge base of the local user; unchanged files are skipped."""
    import asyncio

    from parley.knowledge.cli import run_ingest, upload_batch

    if url:
        raise typer.Exit(upload_batch(url, os.environ.get("PARLEY_API_KEY"), paths, kb))
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


def _with_db(action: Callable[..., Awaitable[T]]) -> T:
    """Run ``action(db)`` against the configured database, migrated first."""
    from parley.store.db import Database

    settings = Settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> T:
        db = Database(settings.resolved_database_url, sqlite_driver=settings.sqlite_driver)
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
    from parley.catalog import MappingError, import_csv, parse_map

    try:
        mapping = parse_map(map_)
    except MappingError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None
    try:
        report = _with_db(
            lambda db: import_csv(db, file, mapping, default_stock=default_stock, replace=replace)
        )
    except MappingError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None
    typer.echo(
        f"imported {report.imported} products from {file.name} "
        f"({report.duplicates} repeated ids kept once, {report.skipped} rows skipped)"
    )
    for problem in report.problems[:10]:
        typer.echo(f"  skipped {problem}", err=True)


def main() -> None:
    app()
