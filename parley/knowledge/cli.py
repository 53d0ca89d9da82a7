"""``parley ingest PATH --kb NAME``: a progress bar per file and a summary at the end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from parley.config import Settings
from parley.knowledge.bases import Knowledge
from parley.knowledge.ingest import iter_files
from parley.logs import configure
from parley.store.db import Database
from parley.users import ensure_local_user


async def run_ingest(settings: Settings, paths: Sequence[Path], kb: str, *, prune: bool = False) -> int:
    """Returns the exit status: 0, or 1 when some files could not be ingested."""
    configure("ERROR", json_logs=False)  # skipped files are reported below, once
    console = Console(stderr=True)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(
        settings.resolved_database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_driver=settings.sqlite_driver,
    )
    started = time.perf_counter()
    try:
        await db.upgrade()
        owner = await ensure_local_user(db)
        knowledge = Knowledge(db, embeddings=settings.embeddings, cache_dir=settings.models_dir)
        total = sum(1 for root in paths for _ in iter_files(root))
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[file]}"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"ingest into {kb}", total=total, file="")

            def advance(source: str, error: str | None) -> None:
                progress.update(task, advance=1, file=source)
                if error:
                    progress.console.print(f"[yellow]skipped[/] {source}: {error}")

            report = await knowledge.sync(owner.user_id, kb, paths, prune=prune, progress=advance)
    finally:
        await db.close()
    seconds = time.perf_counter() - started
    console.print(
        f"[bold]{kb}[/]: {report.created} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.deleted} deleted, {len(report.failed)} skipped; "
        f"{report.chunks} chunks ({report.embedded} embedded) in {seconds:.1f} s"
    )
    return 1 if report.failed else 0
