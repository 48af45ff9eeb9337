"""The ingestion job: a folder of documents into a Chroma collection, incrementally and crash-safe.

Each document's chunks carry its content hash and chunk count, so the index itself records which
documents are complete: a run upserts a document's new chunks before deleting its stale ones, and a
run killed at any point is repaired by the next one.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ingest.chunking import Chunk, Chunker, ChunkingOptions, chunk_id, content_hash
from ingest.index import (
    CollectionNotFound,
    Index,
    MetadataValue,
    WriteRefused,
    validate_collection_name,
)
from ingest.readers import (
    SUPPORTED_SUFFIXES,
    DocumentRejected,
    ParsedDocument,
    ReadLimits,
    read_document,
)

Outcome = str  # "added" | "updated" | "unchanged" | "skipped" | "failed"


@dataclass(frozen=True)
class FileIssue:
    """A file that was not ingested, and why."""

    path: str
    reason: str


@dataclass
class IngestSummary:
    """What a run did."""

    collection: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    skipped: list[FileIssue] = field(default_factory=list)
    failed: list[FileIssue] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The summary as plain data, for --json."""
        return asdict(self)


@dataclass(frozen=True)
class IngestOptions:
    """The job's limits and batching."""

    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    reading: ReadLimits = field(default_factory=ReadLimits)
    max_file_bytes: int = 20_000_000
    embed_batch_size: int = 64
    # Chunks gathered before one embed call: sentence-transformers sorts a call's texts by length,
    # so a large call pads far less than many small ones (measured ~2x on the sample corpus).
    flush_chunks: int = 512


@dataclass
class _Pending:
    doc_id: str
    document: ParsedDocument
    document_hash: str
    chunks: list[Chunk]
    outcome: Outcome


ProgressCallback = Callable[[str, Outcome], None]


def discover(root: Path) -> tuple[list[tuple[str, Path]], list[FileIssue]]:
    """Supported files under root (relative posix path, path) and the files passed over."""
    base = root.resolve()
    found: list[tuple[str, Path]] = []
    passed_over: list[FileIssue] = []
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            relative = path.relative_to(base).as_posix()
            if name.startswith("."):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(base):
                passed_over.append(FileIssue(relative, "symlink that leaves the ingested folder"))
            elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
                passed_over.append(
                    FileIssue(relative, f"unsupported type {path.suffix or '(none)'}")
                )
            elif (kind := _special_kind(path)) is not None:
                passed_over.append(FileIssue(relative, f"not a regular file ({kind})"))
            else:
                found.append((relative, path))
    return found, passed_over


def _special_kind(path: Path) -> str | None:
    """What a path is when it exists and is not a regular file (a FIFO blocks a reader)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # reading it says why
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; raises DocumentRejected unless it is a regular file within max_bytes.

    Opened without blocking and checked on the open descriptor, so a file swapped for a FIFO or
    grown after discovery is refused too.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise DocumentRejected("not a regular file")
        raw = handle.read(max_bytes + 1) if status.st_size <= max_bytes else b""
    if status.st_size > max_bytes or len(raw) > max_bytes:
        size = max(status.st_size, len(raw))
        raise DocumentRejected(f"over the size limit ({size} > {max_bytes} bytes)")
    return raw


def _stored_documents(
    index: Index, collection: str
) -> dict[str, dict[str, Mapping[str, MetadataValue]]]:
    try:
        stored = index.chunk_metadata(collection)
    except CollectionNotFound:
        return {}
    by_document: dict[str, dict[str, Mapping[str, MetadataValue]]] = defaultdict(dict)
    for chunk, metadata in stored.items():
        by_document[str(metadata.get("doc_id", ""))][chunk] = metadata
    return dict(by_document)


def _is_complete(doc_id: str, document_hash: str, chunks: Mapping[str, Mapping]) -> bool:
    """True when the index holds exactly this version's chunks of the document."""
    counts = {metadata.get("chunk_count") for metadata in chunks.values()}
    if len(counts) != 1:
        return False
    count = next(iter(counts))
    expected = {chunk_id(doc_id, i, document_hash) for i in range(int(count or 0))}
    return bool(expected) and set(chunks) == expected


class IngestJob:
    """One run of ingestion of a folder into a collection."""

    def __init__(self, index: Index, options: IngestOptions | None = None) -> None:
        self.index = index
        self.options = options or IngestOptions()
        self._chunker = Chunker(self.options.chunking, index.embedder.tokenize)

    def run(
        self, root: Path, collection: str, progress: ProgressCallback | None = None
    ) -> IngestSummary:
        """Brings the collection in line with the folder; returns what changed."""
        started = time.perf_counter()
        validate_collection_name(collection)
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        summary = IngestSummary(collection=collection)
        files, summary.skipped = discover(root)
        stored = _stored_documents(self.index, collection)
        report = progress or (lambda path, outcome: None)
        pending: list[_Pending] = []
        present = {relative for relative, _ in files}
        reusable = _reusable_vectors(stored)
        for relative, path in files:
            item = self._prepare(relative, path, stored.get(relative, {}), summary)
            if isinstance(item, str):
                report(relative, item)
                continue
            pending.append(item)
            if sum(len(p.chunks) for p in pending) >= self.options.flush_chunks:
                self._write(collection, pending, stored, reusable, summary, report)
                pending = []
        self._write(collection, pending, stored, reusable, summary, report)
        for doc_id in sorted(set(stored) - present):
            self.index.delete(collection, list(stored[doc_id]))
            summary.deleted += 1
        self.index.mark_revision(collection, uuid.uuid4().hex)
        summary.chunks = self.index.count(collection)
        summary.seconds = round(time.perf_counter() - started, 3)
        return summary

    def _prepare(
        self,
        relative: str,
        path: Path,
        stored: Mapping[str, Mapping[str, MetadataValue]],
        summary: IngestSummary,
    ) -> _Pending | Outcome:
        """Reads and chunks a new or changed file; else says what became of it."""
        try:
            raw = _read_bytes(path, self.options.max_file_bytes)
        except DocumentRejected as error:
            summary.skipped.append(FileIssue(relative, str(error)))
            return "skipped"
        except OSError as error:
            summary.skipped.append(FileIssue(relative, f"unreadable ({error.strerror or error})"))
            return "skipped"
        document_hash = content_hash(raw)
        if stored and _is_complete(relative, document_hash, stored):
            summary.unchanged += 1
            return "unchanged"
        try:
            document = read_document(path, raw, self.options.reading)
            chunks = self._chunker.split(relative, document, document_hash)
        except DocumentRejected as error:
            summary.skipped.append(FileIssue(relative, str(error)))
            return "skipped"
        except Exception as error:  # a parser bug must not stop the batch
            summary.failed.append(FileIssue(relative, f"{type(error).__name__}: {error}"))
            return "failed"
        outcome = "updated" if stored else "added"
        return _Pending(relative, document, document_hash, chunks, outcome)

    def _write(
        self,
        collection: str,
        pending: Sequence[_Pending],
        stored: Mapping[str, Mapping[str, Mapping[str, MetadataValue]]],
        reusable: Mapping[str, str],
        summary: IngestSummary,
        report: ProgressCallback,
    ) -> None:
        """Embeds a batch of documents in one call, then commits them one document at a time."""
        if not pending:
            return
        chunks = [chunk for item in pending for chunk in item.chunks]
        wanted = {c.text_hash: reusable[c.text_hash] for c in chunks if c.text_hash in reusable}
        found = self.index.vectors(collection, sorted(set(wanted.values())))
        vectors = {h: found[i].embedding for h, i in wanted.items() if i in found}
        missing = list({c.text_hash: c for c in chunks if c.text_hash not in vectors}.values())
        fresh = self.index.embedder.embed(
            [c.embed_text for c in missing], batch_size=self.options.embed_batch_size
        )
        vectors.update(zip((c.text_hash for c in missing), fresh, strict=True))
        summary.embedded += len(missing)
        summary.reused += len(chunks) - len(missing)
        ingested_at = datetime.now(UTC).isoformat(timespec="seconds")
        for item in pending:
            ids = [chunk.id for chunk in item.chunks]
            try:
                self.index.upsert(
                    collection,
                    ids,
                    np.stack([vectors[chunk.text_hash] for chunk in item.chunks]),
                    [chunk.text for chunk in item.chunks],
                    [_metadata(item, chunk, ingested_at) for chunk in item.chunks],
                )
            except WriteRefused as error:  # this document's fault: the run goes on
                # Its batches already written go; its stored version stays whole.
                self.index.delete(collection, sorted(set(ids) - set(stored.get(item.doc_id, {}))))
                summary.failed.append(FileIssue(item.doc_id, str(error)))
                report(item.doc_id, "failed")
                continue
            stale = sorted(set(stored.get(item.doc_id, {})) - set(ids))
            self.index.delete(collection, stale)
            setattr(summary, item.outcome, getattr(summary, item.outcome) + 1)
            report(item.doc_id, item.outcome)


def _reusable_vectors(
    stored: Mapping[str, Mapping[str, Mapping[str, MetadataValue]]],
) -> dict[str, str]:
    """Chunk text hash -> a stored chunk id whose vector can be reused.

    Every stored chunk qualifies: a rename or an edit that keeps some passages embeds only
    what is new.
    """
    return {
        str(metadata["chunk_hash"]): chunk
        for chunks in stored.values()
        for chunk, metadata in chunks.items()
        if "chunk_hash" in metadata
    }


def _metadata(item: _Pending, chunk: Chunk, ingested_at: str) -> dict[str, MetadataValue]:
    return {
        "doc_id": item.doc_id,
        "source": item.doc_id,
        "title": item.document.title,
        "heading_path": chunk.heading_path,
        "format": item.document.format,
        "chunk_index": chunk.index,
        "chunk_count": len(item.chunks),
        "content_hash": item.document_hash,
        "chunk_hash": chunk.text_hash,
        "ingested_at": ingested_at,
    }
