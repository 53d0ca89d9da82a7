"""What a server does at start for the person who started it.

- The knowledge it keeps in sync: ``PARLEY_KNOWLEDGE`` when set, else the built-in assistants'
  demo knowledge (the Parley FAQ for ``support``, demo CVs for ``recruiter``, written into the
  data dir the first time) plus the config file's ``[knowledge]`` table. ``PARLEY_KNOWLEDGE={}``
  syncs nothing.
- That sync runs in the background (``FirstStart``): the server answers at once, while the
  first start loads (or exports) the embedding model and ingests the files, each step logged
  with what it is doing and, at the end, how many documents each assistant can answer from. An
  assistant whose knowledge is empty says so in the log and in its greeting.
- One line once the server listens: ``Parley is ready: http://127.0.0.1:8000 (assistants: …;
  model: …)`` (``ready_line``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import structlog
import typer
import uvicorn

from parley.assistants import Assistant, Assistants
from parley.config import Settings
from parley.knowledge.bases import Knowledge
from parley.knowledge.ingest import iter_files
from parley.users import Principal

log = structlog.get_logger(__name__)

#: The support assistant's FAQ, shipped in the package.
DEMO_FAQ = Path(__file__).parent / "knowledge" / "demo" / "parley-faq.md"
DEMO_CVS = "demo-cvs"
#: A knowledge base of at least this many files logs its progress every quarter.
PROGRESS_FROM = 8


def load_env_file(path: Path = Path(".env")) -> None:
    """Put a ``.env`` file's variables in the environment (the environment wins): the settings read
    it anyway, and a provider's key variable (``OPENAI_API_KEY`` …) is read from the environment."""
    from dotenv import load_dotenv

    if path.is_file():
        load_dotenv(path, override=False)


def knowledge_paths(settings: Settings) -> dict[str, list[Path]]:
    """``{knowledge base: files or folders}`` to keep in sync (see the module's docstring)."""
    if settings.knowledge is not None:
        return {name: list(paths) for name, paths in settings.knowledge.items()}
    paths: dict[str, list[Path]] = {"parley-faq": [DEMO_FAQ], DEMO_CVS: [settings.data_dir / DEMO_CVS]}
    paths.update(config_knowledge(settings.config_file))
    return paths


def config_knowledge(config_file: Path | None) -> dict[str, list[Path]]:
    """The config file's ``[knowledge]`` table: ``name = ["folder", ...]``, relative to the file."""
    if config_file is None:
        return {}
    table = tomllib.loads(config_file.read_text()).get("knowledge", {})
    found: dict[str, list[Path]] = {}
    for name, value in table.items() if isinstance(table, dict) else [("", None)]:
        entries = [value] if isinstance(value, str) else value
        if not name or not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ValueError(
                f'{config_file}: [knowledge] maps knowledge base names to folders, like notes = ["notes/"]'
            )
        found[name] = [(config_file.parent / entry).resolve() for entry in entries]
    return found


def ready_line(url: str, assistants: Assistants) -> str:
    names = ", ".join(a.name for a in assistants.all())
    return f"Parley is ready: {url} (assistants: {names}; model: {assistants.default_model})"


def empty_greeting(assistant: Assistant, bases: Sequence[str]) -> str:
    names = ", ".join(bases)
    return (
        f"Hello! I'm the {assistant.name} assistant, but my knowledge base ({names}) is empty, so I "
        f"cannot answer from it yet. Add documents with `parley ingest FILES --kb {bases[0]}`."
    )


class FirstStart:
    """The knowledge sync, in the background of a server that already answers."""

    def __init__(
        self,
        knowledge: Knowledge,
        assistants: Assistants,
        paths: Mapping[str, list[Path]],
        *,
        exclusive: Callable[[], AbstractAsyncContextManager[bool]] | None = None,
        preload: bool = False,
    ) -> None:
        """``exclusive``: a lock of the cluster, true for the one process that may sync (the
        others load what it stored); without it, this process syncs. ``preload``: then load the
        indexes of the assistants' knowledge bases (a process that answers from them: its first
        question does not wait for the load; an API-only process loads a base on first use)."""
        self.knowledge = knowledge
        self.assistants = assistants
        self.paths = dict(paths)
        self._exclusive = exclusive
        self._preload = preload
        self._task: asyncio.Task[None] | None = None
        self._greetings = {a.name: a.options.get("greeting") for a in assistants.all()}
        #: Documents each assistant can answer from, once the sync is done.
        self.documents: dict[str, int] = {}

    def begin(self, owner_id: int, data_dir: Path) -> None:
        self._task = asyncio.create_task(self._run(owner_id, data_dir), name="parley-first-start")

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()

    async def wait(self) -> None:
        """Until the sync is done (tests and benchmarks read a server whose knowledge is in place)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, owner_id: int, data_dir: Path) -> None:
        try:
            if self._exclusive is None:
                await self._sync(owner_id, data_dir)
            else:
                async with self._exclusive() as syncs:
                    if syncs:
                        await self._sync(owner_id, data_dir)
            await self._report(owner_id)
            if self._preload:
                names = list(dict.fromkeys(n for a in self.assistants.all() for n in a.knowledge_bases))
                for kb in await self.knowledge.bases_named(owner_id, names):
                    await self.knowledge.preload(kb.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("knowledge_sync_failed")

    async def _sync(self, owner_id: int, data_dir: Path) -> None:
        if not self.paths:
            return
        cvs = data_dir / DEMO_CVS
        if cvs in self.paths.get(DEMO_CVS, []) and not cvs.exists():
            from parley import demo_cvs

            written = await asyncio.to_thread(demo_cvs.main, cvs)
            log.info("demo_cvs_written", folder=str(cvs), cvs=written)
        started = time.perf_counter()
        log.info(
            "knowledge_preparing",
            bases=list(self.paths),
            step="loading the embedding model (a first start exports it to ONNX: up to a minute)",
            note="the server already answers meanwhile",
        )
        if await self.knowledge.embedder() is not None:
            log.info("embedding_model_ready", seconds=round(time.perf_counter() - started, 1))
        for name, paths in self.paths.items():
            present = [p for p in paths if p.exists()]
            if len(present) < len(paths):
                log.warning(
                    "knowledge_path_missing", kb=name, missing=[str(p) for p in paths if not p.exists()]
                )
            files = sum(1 for root in present for _ in iter_files(root))
            log.info("knowledge_syncing", kb=name, files=files)
            done = 0

            def progress(source: str, error: str | None, kb: str = name, total: int = files) -> None:
                nonlocal done
                done += 1
                if total >= PROGRESS_FROM and done < total and done % max(1, total // 4) == 0:
                    log.info("knowledge_progress", kb=kb, files=f"{done}/{total}")

            report = await self.knowledge.sync(
                owner_id, name, present, prune=bool(present), progress=progress
            )
            log.info(
                "knowledge_synced",
                kb=name,
                created=report.created,
                updated=report.updated,
                unchanged=report.unchanged,
                deleted=report.deleted,
                failed=len(report.failed),
            )

    async def _report(self, owner_id: int) -> None:
        counts = {kb.name: n for kb, n in await self.knowledge.list_bases(Principal(owner_id, ""))}
        for assistant in self.assistants.all():
            if not assistant.knowledge_bases:
                continue
            documents = sum(counts.get(name, 0) for name in assistant.knowledge_bases)
            self.documents[assistant.name] = documents
            if documents:
                if (greeting := self._greetings.get(assistant.name)) is not None:
                    assistant.options["greeting"] = greeting
                else:
                    assistant.options.pop("greeting", None)
                log.info(
                    "assistant_knowledge",
                    assistant=assistant.name,
                    documents=documents,
                    bases=assistant.knowledge_bases,
                )
            else:
                assistant.options["greeting"] = empty_greeting(assistant, assistant.knowledge_bases)
                log.warning(
                    "assistant_knowledge_empty",
                    assistant=assistant.name,
                    bases=assistant.knowledge_bases,
                    hint=f"parley ingest FILES --kb {assistant.knowledge_bases[0]}",
                )


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, saying once where it listens as soon as it does (``ready_line``)."""

    def __init__(self, config: uvicorn.Config, *, assistants: Assistants, as_json: bool) -> None:
        super().__init__(config)
        self.assistants = assistants
        self.as_json = as_json

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if not self.started or not self.servers or not self.servers[0].sockets:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        if host in ("0.0.0.0", "::"):  # every address: this machine's loopback is one of them
            host = "127.0.0.1"
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        line = ready_line(url, self.assistants)
        if self.as_json:
            log.info("parley_ready", message=line, url=url)
        else:
            typer.secho(line, bold=True, err=True)
