"""Ingestion's stages overlap (reading goes on while a flush is embedded), and a fault in any stage
reaches the caller, stops the other stages and leaves no thread behind."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import ingest.pipeline
from ingest.chunking import ChunkingOptions
from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation, IndexUnavailable
from ingest.pipeline import IngestJob, IngestOptions
from ingest.stages import Stages

ONE_DOCUMENT_PER_FLUSH = IngestOptions(
    chunking=ChunkingOptions(size=64, overlap=0), flush_chunks=1, read_ahead=1, write_behind=1
)
DOCUMENTS = 12
WAIT_S = 60.0


class InjectedFault(Exception):
    """A fault the test put there."""


class HookedEmbedder:
    """The real embedder, with a hook called before each embed call (given its number)."""

    def __init__(self, inner: Embedder, before: Callable[[int], None]) -> None:
        self.inner = inner
        self.before = before
        self.calls = 0
        self.name = inner.name
        self.backend = inner.backend
        self.dimension = inner.dimension

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        self.before(self.calls)
        return self.inner.embed(texts, batch_size)


def ingest_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ingest-")]


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for number in range(DOCUMENTS):
        (root / f"doc-{number:02}.md").write_text(
            f"# Model {number}\n\nThe model {number} kettle boils in {number + 60} seconds.\n"
        )
    return root


@pytest.fixture()
def files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the job has read so far, in order (the reader stage appends)."""
    read: list[str] = []
    real = ingest.pipeline.read_bytes

    def counted(path: Path, max_bytes: int) -> bytes:
        read.append(path.name)
        return real(path, max_bytes)

    monkeypatch.setattr(ingest.pipeline, "read_bytes", counted)
    return read


def test_reading_goes_on_while_a_flush_is_embedded(
    tmp_path: Path, docs: Path, embedder: Embedder, files_read: list[str]
) -> None:
    seen_at_first_embed: list[int] = []

    def first_waits_for_the_reader(call: int) -> None:
        if call == 1:  # a job that reads only between embeds never gets past this
            for _ in range(int(WAIT_S / 0.01)):
                if len(files_read) >= 3:
                    break
                threading.Event().wait(0.01)
            seen_at_first_embed.append(len(files_read))

    hooked = HookedEmbedder(embedder, first_waits_for_the_reader)
    index = Index(IndexLocation(tmp_path / "chroma"), hooked)
    summary = IngestJob(index, ONE_DOCUMENT_PER_FLUSH).run(docs, "docs")
    assert seen_at_first_embed[0] >= 3
    assert summary.added == DOCUMENTS and summary.failed == []
    assert index.count("docs") == DOCUMENTS
    assert ingest_threads() == []


def test_an_embedder_fault_reaches_the_caller_and_stops_the_reader(
    tmp_path: Path, docs: Path, embedder: Embedder, files_read: list[str]
) -> None:
    def fails_on_third(call: int) -> None:
        if call == 3:
            raise InjectedFault("the embedder died")

    index = Index(IndexLocation(tmp_path / "chroma"), HookedEmbedder(embedder, fails_on_third))
    with pytest.raises(InjectedFault, match="the embedder died"):
        IngestJob(index, ONE_DOCUMENT_PER_FLUSH).run(docs, "docs")
    assert ingest_threads() == []
    # Three flushes embedded at most, plus what the bounded queues hold: the reader stopped.
    assert len(files_read) < DOCUMENTS
    stored = index.chunk_metadata("docs")
    assert {m["source"] for m in stored.values()} <= {"doc-00.md", "doc-01.md"}
    summary = IngestJob(index, ONE_DOCUMENT_PER_FLUSH).run(docs, "docs")
    assert summary.added == DOCUMENTS - len({m["source"] for m in stored.values()})


def test_a_reader_fault_reaches_the_caller(
    tmp_path: Path, docs: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest.pipeline.read_bytes

    def fails_on_doc_05(path: Path, max_bytes: int) -> bytes:
        if path.name == "doc-05.md":
            raise InjectedFault("the disk went away")
        return real(path, max_bytes)

    monkeypatch.setattr(ingest.pipeline, "read_bytes", fails_on_doc_05)
    index = Index(IndexLocation(tmp_path / "chroma"), embedder)
    with pytest.raises(InjectedFault, match="the disk went away"):
        IngestJob(index, ONE_DOCUMENT_PER_FLUSH).run(docs, "docs")
    assert ingest_threads() == []


def test_a_writer_fault_stops_reading_and_embedding(
    tmp_path: Path,
    docs: Path,
    embedder: Embedder,
    files_read: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooked = HookedEmbedder(embedder, lambda call: None)
    index = Index(IndexLocation(tmp_path / "chroma"), hooked)

    def chroma_dies(*args: object, **kwargs: object) -> None:
        raise IndexUnavailable("Chroma cannot be reached: injected")

    monkeypatch.setattr(index, "upsert", chroma_dies)
    with pytest.raises(IndexUnavailable, match="injected"):
        IngestJob(index, ONE_DOCUMENT_PER_FLUSH).run(docs, "docs")
    assert ingest_threads() == []
    assert hooked.calls < DOCUMENTS and len(files_read) < DOCUMENTS


def endless(produced: list[int]) -> Iterator[int]:
    number = 0
    while True:
        produced.append(number)
        yield number
        number += 1


def test_a_stage_error_reaches_the_consumer_and_stops_the_source() -> None:
    produced: list[int] = []

    def breaks_at_three(items: Iterator[int]) -> Iterator[int]:
        for item in items:
            if item == 3:
                raise InjectedFault("stage two broke")
            yield item

    received: list[int] = []
    with pytest.raises(InjectedFault), Stages() as stages:
        source = stages.ahead(endless(produced), depth=2, name="one")
        for item in stages.ahead(breaks_at_three(source), depth=2, name="two"):
            received.append(item)
    assert received == [0, 1, 2]
    assert ingest_threads() == []
    # Stage one is at most its queue (2) plus the item it holds beyond what stage two took.
    assert len(produced) <= 4 + 2 + 1


def test_a_consumer_that_leaves_stops_every_stage() -> None:
    produced: list[int] = []
    with pytest.raises(InjectedFault), Stages() as stages:
        for item in stages.ahead(endless(produced), depth=3, name="one"):
            if item == 5:
                raise InjectedFault("the consumer left")
    assert ingest_threads() == []
    assert len(produced) <= 6 + 3 + 1
