"""Files users uploaded: checked (``parley.uploads``), parsed, stored, owned.

Content lives in the data directory under random names (``files/<32 hex>``), outside
anything served over HTTP; the database keeps the display name, the detected kind, the
extracted text and the owner. Parsing runs in a worker thread, PDFs through ``parley.pdf``
and images through Pillow under a pixel limit, so a damaged or hostile file is a 422,
never a crash.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from fastapi import Request
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, delete, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from parley.errors import ApiError, not_found
from parley.ownership import get_owned
from parley.pdf import MAX_TEXT_CHARS, UnreadablePdf, read_pdf
from parley.store.db import Database
from parley.store.schema import Base, User, new_id, now
from parley.threads import get_thread
from parley.uploads import Received, parse_received, receive
from parley.users import Principal

log = structlog.get_logger(__name__)

MAX_PIXELS = 40_000_000


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    thread_id: Mapped[str | None] = mapped_column(
        ForeignKey("threads.id", ondelete="SET NULL"), default=None, index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(10))
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_name: Mapped[str] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text, default=None)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)


def extract(received: Received) -> tuple[str | None, dict[str, Any]]:
    """Validate the whole file and pull out its text; 422 when it is damaged."""
    if received.kind in ("txt", "md"):
        assert received.text is not None
        return received.text, {}
    if received.kind == "json":
        assert received.text is not None
        try:
            json.loads(received.text)
        except (ValueError, RecursionError) as exc:
            raise ApiError(422, "corrupt_file", f"the file is not valid JSON: {exc}"[:300]) from None
        return received.text, {}
    if received.kind == "csv":
        assert received.text is not None
        try:
            rows = sum(1 for _ in csv.reader(io.StringIO(received.text, newline="")))
        except csv.Error as exc:
            raise ApiError(422, "corrupt_file", f"the file is not valid CSV: {exc}") from None
        return received.text, {"rows": rows}
    if received.kind == "pdf":
        return _pdf_text(received.path)
    return None, _image_meta(received.path, received.kind)


def _pdf_text(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        pdf = read_pdf(path)
    except UnreadablePdf as exc:
        raise ApiError(422, exc.code, exc.reason) from None
    text = "\n\n".join(pdf.pages)
    return text[:MAX_TEXT_CHARS], {"pages": len(pdf.pages), "truncated": pdf.truncated}


def _image_meta(path: Path, kind: str) -> dict[str, Any]:
    from PIL import Image

    expected = {"png": "PNG", "jpg": "JPEG"}[kind]
    try:
        with Image.open(path, formats=[expected]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ApiError(
                    422,
                    "file_too_complex",
                    f"the image is {width}x{height}; the limit is {MAX_PIXELS} pixels",
                )
            image.verify()
        with Image.open(path, formats=[expected]) as image:
            image.load()
    except ApiError:
        raise
    except Exception as exc:
        log.info("image_rejected", error=type(exc).__name__)
        raise ApiError(
            422, "corrupt_file", f"the {kind.upper()} image is damaged and cannot be read"
        ) from None
    return {"width": width, "height": height}


class Files:
    def __init__(self, db: Database, directory: Path, *, max_bytes: int, quota_bytes: int) -> None:
        self._db = db
        self.directory = directory
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes

    async def used_bytes(self, user_id: int) -> int:
        async with self._db.session() as session:
            value = await session.scalar(
                select(func.coalesce(func.sum(File.size), 0)).where(File.user_id == user_id)
            )
        return int(value or 0)

    async def upload(self, request: Request, principal: Principal) -> File:
        """Receive, check, parse and store one upload; on any refusal nothing is kept."""
        left = self.quota_bytes - await self.used_bytes(principal.user_id)
        received = await receive(request, self.directory, max_bytes=self.max_bytes, quota_left=left)
        try:
            text, meta = await parse_received(extract, received)
            return await self._store(
                principal, received, text, meta, received.fields.get("thread_id") or None
            )
        finally:
            received.discard()

    async def _store(
        self,
        principal: Principal,
        received: Received,
        text: str | None,
        meta: dict[str, Any],
        thread_id: str | None,
    ) -> File:
        storage_name = secrets.token_hex(16)
        final = self.directory / storage_name
        async with self._db.transaction() as session:
            if thread_id is not None:
                thread = await get_thread(session, principal, thread_id)
                if thread.user_id != principal.user_id:  # an admin's file still goes only to its own threads
                    raise not_found("thread", thread_id)
            # Serialise a user's uploads (SQLite: BEGIN IMMEDIATE already does) so the quota holds.
            await session.execute(select(User.id).where(User.id == principal.user_id).with_for_update())
            used = await session.scalar(
                select(func.coalesce(func.sum(File.size), 0)).where(File.user_id == principal.user_id)
            )
            if int(used or 0) + received.size > self.quota_bytes:
                raise ApiError(
                    413,
                    "quota_exceeded",
                    f"this upload would exceed your storage quota of {self.quota_bytes} bytes; "
                    "delete files you no longer need",
                )
            file = File(
                id=new_id("file"),
                user_id=principal.user_id,
                thread_id=thread_id,
                name=received.name,
                kind=received.kind,
                media_type=received.media_type,
                size=received.size,
                sha256=received.sha256,
                storage_name=storage_name,
                text=text,
                meta=meta,
                created_at=now(),
            )
            session.add(file)
            os.replace(received.path, final)
            try:
                await session.flush()
            except BaseException:
                final.unlink(missing_ok=True)
                raise
        return file

    async def attach(self, file: File, thread_id: str) -> File:
        """Attach a stored file to a thread of its owner (the caller checked the thread)."""
        async with self._db.session() as session, session.begin():
            await session.execute(update(File).where(File.id == file.id).values(thread_id=thread_id))
        file.thread_id = thread_id
        return file

    async def attach_listed(self, user_id: int, thread_id: str, ids: object) -> None:
        """Attach the user's files named in a run's ``metadata.files`` that are in no thread yet
        to the run's thread, so that later questions in the conversation still see them."""
        if not isinstance(ids, list):
            return
        wanted = [i for i in ids if isinstance(i, str)][:20]
        if not wanted:
            return
        async with self._db.session() as session, session.begin():
            await session.execute(
                update(File)
                .where(File.id.in_(wanted), File.user_id == user_id, File.thread_id.is_(None))
                .values(thread_id=thread_id)
            )

    async def get(self, principal: Principal, file_id: str) -> File:
        async with self._db.session() as session:
            return await get_owned(session, principal, File, file_id, kind="file")

    async def list(self, principal: Principal, *, limit: int, thread_id: str | None = None) -> Sequence[File]:
        stmt = select(File).where(File.user_id == principal.user_id)
        if thread_id is not None:
            stmt = stmt.where(File.thread_id == thread_id)
        async with self._db.session() as session:
            return (
                await session.scalars(stmt.order_by(File.created_at.desc(), File.id.desc()).limit(limit))
            ).all()

    async def delete(self, principal: Principal, file_id: str) -> None:
        file = await self.get(principal, file_id)
        await self._remove([file])

    async def delete_for_thread(self, principal: Principal, thread_id: str) -> int:
        files = await self.list(principal, limit=100_000, thread_id=thread_id)
        await self._remove(files)
        return len(files)

    async def _remove(self, files: Sequence[File]) -> None:
        if not files:
            return
        async with self._db.transaction() as session:
            await session.execute(delete(File).where(File.id.in_([f.id for f in files])))
        for file in files:
            (self.directory / file.storage_name).unlink(missing_ok=True)
