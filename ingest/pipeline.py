"""The ingestion job: a folder of documents into a Chroma collection, incrementally and crash-safe.

Each document's chunks carry its content hash and chunk count, so the index itself records which
documents are complete: a run upserts a document's new chunks before deleting its stale ones, and a
run killed at any point is repaired by the next one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    read_bytes,
    read_document,
    special_kind,
)
from ingest.stages import Stages

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
    # Chunks gathered before one embed call: the embedder sorts a call's texts by length, so a
    # large call pads less (padded tokens over real ones on the bench's 2,430 chunks: 1.59 in
    # flushes of 512, 1.35 of 2,048, 1.26 in one call). The stages overlap reading and writing
    # with embedding, so a large flush costs little but coarser progress.
    flush_chunks: int = 2048
    # Flushes chunked ahead of the embedder, and embedded flushes waiting for their writes.
    read_ahead: int = 2
    write_behind: int = 2


@dataclass
class _Pending:
    doc_id: str
    document: ParsedDocument
    document_hash: str
    chunks: list[Chunk]
    outcome: Outcome


@dataclass(frozen=True)
class _Passed:
    """A file that needs no write: unchanged, or skipped or failed with its reason."""

    doc_id: str
    outcome: Outcome
    issue: FileIssue | None = None


@dataclass
class _Flush:
    """Documents read and chunked together, embedded in one call, then written."""

    pending: list[_Pending] = field(default_factory=list)
    passed: list[_Passed] = field(default_factory=list)
    chunks: int = 0
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    embedded: int = 0


ProgressCallback = Callable[[str, Outcome], None]
_PASSED_PER_FLUSH = 64


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
            elif (kind := special_kind(path)) is not None:
                passed_over.append(FileIssue(relative, f"not a regular file ({kind})"))
            else:
                found.append((relative, path))
    return found, passed_over


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
    """One run of ingestion of a folder into a collection.

    Three stages overlap, each in its own thread with bounded queues between them: reading and
    chunking, embedding (a flush of documents in one call, sorted by length inside it), and
    writing (upserts of whole documents in Chroma-sized batches, then deletes of stale chunks).
    """

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
        present = {relative for relative, _ in files}
        reusable = _reusable_vectors(stored)
        with Stages() as stages:
            read = stages.ahead(self._flushes(files, stored), self.options.read_ahead, "read")
            embedded = (self._embed(collection, flush, reusable) for flush in read)
            for flush in stages.ahead(embedded, self.options.write_behind, "embed"):
                self._write(collection, flush, stored, summary, report)
        for doc_id in sorted(set(stored) - present):
            self.index.delete(collection, list(stored[doc_id]))
            summary.deleted += 1
        self.index.mark_revision(collection, uuid.uuid4().hex)
        summary.chunks = self.index.count(collection)
        summary.seconds = round(time.perf_counter() - started, 3)
        return summary

    def _flushes(
        self, files: Sequence[tuple[str, Path]], stored: Mapping[str, Mapping[str, Mapping]]
    ) -> Iterator[_Flush]:
        """The files read and chunked, in flushes of about flush_chunks chunks, or sooner once
        _PASSED_PER_FLUSH files needed no write (so an incremental run's progress shows)."""
        flush = _Flush()
        for relative, path in files:
            item = self._prepare(relative, path, stored.get(relative, {}))
            if isinstance(item, _Passed):
                flush.passed.append(item)
            else:
                flush.pending.append(item)
                flush.chunks += len(item.chunks)
            if flush.chunks >= self.options.flush_chunks or len(flush.passed) >= _PASSED_PER_FLUSH:
                yield flush
                flush = _Flush()
        if flush.pending or flush.passed:
            yield flush

    def _prepare(
        self, relative: str, path: Path, stored: Mapping[str, Mapping[str, MetadataValue]]
    ) -> _Pending | _Passed:
        """Reads and chunks a new or changed file; else says what became of it."""
        try:
            raw = read_bytes(path, self.options.max_file_bytes)
        except DocumentRejected as error:
            return _Passed(relative, "skipped", FileIssue(relative, str(error)))
        except OSError as error:
            reason = f"unreadable ({error.strerror or error})"
            return _Passed(relative, "skipped", FileIssue(relative, reason))
        document_hash = content_hash(raw)
        if stored and _is_complete(relative, document_hash, stored):
            return _Passed(relative, "unchanged")
        try:
            document = read_document(path, raw, self.options.reading)
            chunks = self._chunker.split(relative, document, document_hash)
        except DocumentRejected as error:
            return _Passed(relative, "skipped", FileIssue(relative, str(error)))
        except Exception as error:  # a parser bug must not stop the batch
            reason = f"{type(error).__name__}: {error}"
            return _Passed(relative, "failed", FileIssue(relative, reason))
        outcome = "updated" if stored else "added"
        return _Pending(relative, document, document_hash, chunks, outcome)

    def _embed(self, collection: str, flush: _Flush, reusable: Mapping[str, str]) -> _Flush:
        """Finds the flush's stored vectors to reuse and embeds the rest in one call."""
        chunks = [chunk for item in flush.pending for chunk in item.chunks]
        if not chunks:
            return flush
        wanted = {c.text_hash: reusable[c.text_hash] for c in chunks if c.text_hash in reusable}
        found = self.index.vectors(collection, sorted(set(wanted.values())))
        flush.vectors = {h: found[i].embedding for h, i in wanted.items() if i in found}
        unique = {c.text_hash: c for c in chunks if c.text_hash not in flush.vectors}
        missing = list(unique.values())
        fresh = self.index.embedder.embed(
            [c.embed_text for c in missing], batch_size=self.options.embed_batch_size
        )
        flush.vectors.update(zip((c.text_hash for c in missing), fresh, strict=True))
        flush.embedded = len(missing)
        return flush

    def _write(
        self,
        collection: str,
        flush: _Flush,
        stored: Mapping[str, Mapping[str, Mapping[str, MetadataValue]]],
        summary: IngestSummary,
        report: ProgressCallback,
    ) -> None:
        """Records the files that needed no write, then commits the flush's documents."""
        for passed in flush.passed:
            if passed.issue is not None:
                issues = summary.failed if passed.outcome == "failed" else summary.skipped
                issues.append(passed.issue)
            elif passed.outcome == "unchanged":
                summary.unchanged += 1
            report(passed.doc_id, passed.outcome)
        summary.embedded += flush.embedded
        summary.reused += flush.chunks - flush.embedded
        ingested_at = datetime.now(UTC).isoformat(timespec="seconds")
        for group in _groups(flush.pending, self.index.max_batch_size()):
            self._commit(collection, group, flush.vectors, stored, ingested_at, summary, report)

    def _commit(
        self,
        collection: str,
        group: Sequence[_Pending],
        vectors: Mapping[str, np.ndarray],
        stored: Mapping[str, Mapping[str, Mapping[str, MetadataValue]]],
        ingested_at: str,
        summary: IngestSummary,
        report: ProgressCallback,
    ) -> None:
        """Upserts whole documents together, then deletes their stale chunks: a run killed in
        between leaves each document either complete or repaired by the next run."""
        chunks = [(item, chunk) for item in group for chunk in item.chunks]
        ids = [chunk.id for _, chunk in chunks]
        try:
            if chunks:
                self.index.upsert(
                    collection,
                    ids,
                    np.stack([vectors[chunk.text_hash] for _, chunk in chunks]),
                    [chunk.text for _, chunk in chunks],
                    [_metadata(item, chunk, ingested_at) for item, chunk in chunks],
                )
        except WriteRefused as error:  # a document's fault: the run goes on without it
            if len(group) > 1:  # Chroma checks a write before storing it: find the document
                for item in group:
                    self._commit(collection, [item], vectors, stored, ingested_at, summary, report)
                return
            # Its batches already written go; its stored version stays whole.
            doc_id = group[0].doc_id
            self.index.delete(collection, sorted(set(ids) - set(stored.get(doc_id, {}))))
            summary.failed.append(FileIssue(doc_id, str(error)))
            report(doc_id, "failed")
            return
        written = set(ids)
        stale = [c for item in group for c in sorted(set(stored.get(item.doc_id, {})) - written)]
        self.index.delete(collection, stale)
        for item in group:
            setattr(summary, item.outcome, getattr(summary, item.outcome) + 1)
            report(item.doc_id, item.outcome)


def _groups(pending: Sequence[_Pending], limit: int) -> Iterator[list[_Pending]]:
    """Documents in runs whose chunks fit one Chroma write; a larger document goes alone (the
    index splits it)."""
    group: list[_Pending] = []
    rows = 0
    for item in pending:
        if group and rows + len(item.chunks) > limit:
            yield group
            group, rows = [], 0
        group.append(item)
        rows += len(item.chunks)
    if group:
        yield group


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
