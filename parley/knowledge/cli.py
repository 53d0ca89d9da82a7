"""``parley ingest PATH --kb NAME``: a progress bar per file and a summary at the end; with
``--url``, the files go to a running server as one batch (a zip archive) and the bar follows
its job."""

from __future__ import annotations

import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import httpx
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
        knowledge = Knowledge(
            db,
            embeddings=settings.embeddings,
            cache_dir=settings.models_dir,
            questions=settings.question_embedding,
            chunks=settings.chunk_embedding,
        )
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


def upload_batch(url: str, api_key: str | None, paths: Sequence[Path], kb: str) -> int:
    """Zip the files (their paths below each root are their sources), send them as one batch,
    show the job's progress; 0, or 1 when some files were skipped or the job failed."""
    console = Console(stderr=True)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.perf_counter()
    with (
        httpx.Client(base_url=url, headers=headers, timeout=600) as client,
        tempfile.TemporaryFile() as packed,
    ):
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
            for root in paths:
                for source, path in iter_files(root):
                    archive.write(path, source)
        packed.seek(0)
        bases = client.get("/v1/knowledge-bases")
        bases.raise_for_status()
        kb_id = next((b["id"] for b in bases.json()["data"] if b["name"] == kb), None)
        if kb_id is None:
            created = client.post("/v1/knowledge-bases", json={"name": kb})
            created.raise_for_status()
            kb_id = created.json()["id"]
        response = client.post(
            f"/v1/knowledge-bases/{kb_id}/documents/batch",
            files={"file": ("ingest.zip", packed, "application/zip")},
        )
        if response.status_code != 202:
            console.print(f"[red]refused[/] ({response.status_code}): {response.json()['error']['message']}")
            return 1
        job = response.json()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"ingest into {kb}", total=job["total"])
            while job["status"] == "running":
                time.sleep(0.5)
                job = client.get(f"/v1/knowledge-bases/{kb_id}/jobs/{job['id']}").json()
                progress.update(task, completed=job["done"])
    counts = {
        s: sum(1 for r in job["results"] if r["status"] == s) for s in ("created", "updated", "unchanged")
    }
    skipped = [r for r in job["results"] if r["status"] == "skipped"]
    for r in skipped:
        console.print(f"[yellow]skipped[/] {r['source']}: {r['error']}")
    if job["status"] != "completed":
        console.print(f"[red]failed[/]: {job['error']}")
        return 1
    chunks = sum(r["chunks"] for r in job["results"])
    embedded = sum(r["embedded"] for r in job["results"])
    console.print(
        f"[bold]{kb}[/]: {counts['created']} added, {counts['updated']} updated, {counts['unchanged']} unchanged, "
        f"{len(skipped)} skipped; {chunks} chunks ({embedded} embedded) in {time.perf_counter() - started:.1f} s"
    )
    return 1 if skipped else 0
