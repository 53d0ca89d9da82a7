"""Receiving many knowledge documents in one request: several ``file`` parts, zip or tar archives.

Each part goes through the same streaming checks as a single upload (``parley.uploads``): its
size is counted as it arrives, its kind comes from its bytes and must agree with its name.
An archive is unpacked into the same temporary folder under rules that refuse what hostile
archives try: member paths that climb out (``..``, absolute paths, drive letters), links and
devices, more members or more unpacked bytes than the limits (a member is read only up to the
limit, whatever its header claims), and members whose content is not the document its name
says. Hidden files and folders (``.git/``, ``__MACOSX/``) are skipped; members that are not
documents, or not the kind their name says (images, executables, text that is not UTF-8), are
listed in the job as skipped with the reason, and the batch goes on, as a folder ingest does.
Any refusal answers 4xx at once and removes every file received so far: nothing is stored.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from parley.errors import ApiError
from parley.uploads import MULTIPART_OVERHEAD, SNIFF_BYTES, _Parts, _Sink, display_name, sniff

ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")
#: Files one batch may hold (parts and archive members together).
MAX_FILES = 20_000


@dataclass(slots=True)
class Batch:
    """Files waiting in ``directory`` to be ingested; ``skipped``: ``(source, reason)``."""

    directory: Path
    files: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Limits:
    file_bytes: int
    total_bytes: int
    kinds: tuple[str, ...]


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVES)


async def receive_batch(request: Request, root: Path, limits: Limits) -> Batch:
    """Stream every ``file`` part into a new folder under ``root``; archives stay packed (see
    ``unpack``). Refusals are 4xx with nothing left behind."""
    media, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise ApiError(415, "expected_multipart", "send the files as multipart/form-data parts named 'file'")
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > limits.total_bytes + MULTIPART_OVERHEAD
    ):
        raise ApiError(
            413, "batch_too_large", f"the batch is larger than the limit of {limits.total_bytes} bytes"
        )
    os.makedirs(root, exist_ok=True)
    batch = Batch(Path(tempfile.mkdtemp(prefix=".batch-", dir=root)))
    parts = _Parts()
    parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
    sink: _Sink | _ArchiveSink | None = None
    current: str | None = None
    total = 0
    done = False
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > limits.total_bytes + MULTIPART_OVERHEAD:
                raise ApiError(
                    413,
                    "batch_too_large",
                    f"the batch is larger than the limit of {limits.total_bytes} bytes",
                )
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ApiError(400, "invalid_multipart", f"the multipart body is malformed: {exc}") from None
            for kind, data in parts.events:
                if kind == "begin":
                    current = None
                elif kind == "disposition":
                    current, sink = _open(data, batch, limits)
                elif kind == "data" and current == "file" and sink is not None:
                    sink.write(data)
                elif kind == "data" and current is not None:
                    value = batch.fields.get(current, "") + data.decode("utf-8", "replace")
                    if len(value) > 1024:
                        raise ApiError(400, "invalid_multipart", f"form field {current!r} is too long")
                    batch.fields[current] = value
                elif kind == "end" and current == "file" and sink is not None:
                    received = sink.finish()
                    batch.files.append((received.name, received.path))
                    sink = None
                    if len(batch.files) > MAX_FILES:
                        raise ApiError(413, "too_many_files", f"a batch holds at most {MAX_FILES} files")
                elif kind == "done":
                    done = True
            parts.events.clear()
        if not done:
            raise ApiError(400, "invalid_multipart", "the multipart body ended early")
        if not batch.files:
            raise ApiError(422, "missing_file", "no file: send each file in a multipart part named 'file'")
        _unique(batch)
    except BaseException:
        if sink is not None:
            sink.abort()
        batch.discard()
        raise
    return batch


def _open(disposition: bytes, batch: Batch, limits: Limits) -> tuple[str | None, _Sink | _ArchiveSink | None]:
    _, params = parse_options_header(disposition)
    name = params.get(b"name", b"").decode("utf-8", "replace")
    filename = params.get(b"filename")
    if filename is None:
        if len(batch.fields) >= 8:
            raise ApiError(400, "invalid_multipart", "too many form fields")
        return name, None
    if name not in ("file", "files"):
        raise ApiError(422, "invalid_multipart", f"put each file in a part named 'file', not {name!r}")
    clean = display_name(filename.decode("utf-8", "replace"))
    if is_archive(clean):
        return "file", _ArchiveSink(batch.directory, clean, limits.total_bytes)
    return "file", _Sink(batch.directory, clean, limits.file_bytes, limits.total_bytes, limits.kinds)


class _ArchiveSink:
    """An archive part, counted and written; checked (and unpacked) once complete."""

    def __init__(self, directory: Path, name: str, max_bytes: int) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.path = directory / f".archive-{secrets.token_hex(8)}"
        self._file = self.path.open("xb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ApiError(
                413, "batch_too_large", f"the archive is larger than the limit of {self.max_bytes} bytes"
            )
        self._file.write(data)

    def finish(self) -> _Archive:
        self._file.close()
        return _Archive(self.name, self.path)

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _Archive:
    name: str
    path: Path


def _unique(batch: Batch) -> None:
    seen: set[str] = set()
    for source, _ in batch.files:
        if source in seen:
            raise ApiError(422, "duplicate_file", f"the batch holds {source!r} twice")
        seen.add(source)


def unpack(batch: Batch, limits: Limits) -> None:
    """Replace each archive in ``batch.files`` by its checked members (blocking: a worker thread)."""
    files: list[tuple[str, Path]] = []
    unpacked = 0
    for source, path in batch.files:
        if not is_archive(source):
            files.append((source, path))
            continue
        for member, data in _members(source, path, limits):
            unpacked += len(data)
            if unpacked > limits.total_bytes:
                raise ApiError(
                    413, "batch_too_large", f"the archive unpacks to more than {limits.total_bytes} bytes"
                )
            if len(files) >= MAX_FILES:
                raise ApiError(413, "too_many_files", f"a batch holds at most {MAX_FILES} files")
            try:
                sniff(data[:SNIFF_BYTES], PurePosixPath(member).name, complete=True, accepted=limits.kinds)
            except ApiError as exc:  # not a document (or not what its name says): skipped, not stored
                batch.skipped.append((member, exc.message))
                continue
            target = batch.directory / f".member-{secrets.token_hex(8)}"
            target.write_bytes(data)
            files.append((member, target))
        path.unlink(missing_ok=True)
    batch.files = files
    _unique(batch)


def _members(source: str, path: Path, limits: Limits) -> Iterator[tuple[str, bytes]]:
    head = path.open("rb").read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        yield from _zip_members(source, path, limits)
    elif head[257:262] == b"ustar" or head.startswith(b"\x1f\x8b"):
        yield from _tar_members(source, path, limits)
    else:
        raise ApiError(
            415, "file_type_mismatch", f"{source}: the name says archive but the content is not a zip or tar"
        )


def _zip_members(source: str, path: Path, limits: Limits) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as archive:
            for count, info in enumerate(archive.infolist()):
                _count(source, count)
                if info.is_dir():
                    continue
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind and kind != stat.S_IFREG:
                    raise ApiError(422, "unsafe_archive", f"{source}: {info.filename!r} is a link or device")
                member = _member_name(source, info.filename)
                if member is None:
                    continue
                if info.file_size > limits.file_bytes:
                    raise _too_large(source, member, limits)
                with archive.open(info) as f:
                    data = f.read(limits.file_bytes + 1)
                if len(data) > limits.file_bytes:
                    raise _too_large(source, member, limits)
                yield member, data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
        raise ApiError(
            422, "unreadable_archive", f"{source}: the zip archive cannot be read ({exc})"
        ) from None
    except RuntimeError as exc:  # encrypted members
        raise ApiError(422, "unreadable_archive", f"{source}: {exc}") from None


def _tar_members(source: str, path: Path, limits: Limits) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for count, info in enumerate(archive):
                _count(source, count)
                if info.isdir():
                    continue
                if not info.isfile():
                    raise ApiError(422, "unsafe_archive", f"{source}: {info.name!r} is a link or device")
                member = _member_name(source, info.name)
                if member is None:
                    continue
                if info.size > limits.file_bytes:
                    raise _too_large(source, member, limits)
                f = archive.extractfile(info)
                data = b"" if f is None else f.read(limits.file_bytes + 1)
                yield member, data
    except (tarfile.TarError, EOFError, OSError, io.UnsupportedOperation) as exc:
        raise ApiError(
            422, "unreadable_archive", f"{source}: the tar archive cannot be read ({exc})"
        ) from None


def _count(source: str, members: int) -> None:
    """Every member counts, folders and hidden files too: a million empty entries is refused."""
    if members >= 2 * MAX_FILES:
        raise ApiError(413, "too_many_files", f"{source}: an archive holds at most {2 * MAX_FILES} entries")


def _member_name(source: str, raw: str) -> str | None:
    """The member's path as its source in the knowledge base; None for hidden files."""
    if raw.startswith(("/", "\\")) or "\\" in raw or (len(raw) > 1 and raw[1] == ":"):
        raise ApiError(422, "unsafe_archive", f"{source}: {raw!r} is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ApiError(422, "unsafe_archive", f"{source}: {raw!r} climbs out of the archive")
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    clean = [display_name(p) for p in parts]
    member = "/".join(clean)
    if len(member) > 500:
        raise ApiError(422, "invalid_file_name", f"{source}: a member's path is longer than 500 characters")
    return member


def _too_large(source: str, member: str, limits: Limits) -> ApiError:
    return ApiError(
        413, "file_too_large", f"{source}: {member} is larger than the limit of {limits.file_bytes} bytes"
    )
