"""A document with more chunks than Chroma takes in one write is written whole, in batches; a
document Chroma refuses fails alone, keeps its stored version, and the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import InvalidArgumentError

from ingest.chunking import ChunkingOptions
from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob, IngestOptions

# One sentence repeated: every chunk has the same text, so thousands of chunks cost one embedding.
SENTENCE = "The K3 kettle descales itself every ninety days. "
SMALL_CHUNKS = IngestOptions(chunking=ChunkingOptions(size=32, overlap=0))  # two sentences each
GOOD_MARKDOWN = "# Good\n\nThe Orbit blender ships with a 19-month warranty.\n"


def chroma_max_batch_size(path: Path) -> int:
    """What the embedded Chroma accepts in one write, asked of chromadb itself."""
    client = chromadb.PersistentClient(str(path), ChromaSettings(anonymized_telemetry=False))
    return int(client.get_max_batch_size())


def test_a_document_over_chromas_batch_size_is_written_whole(
    tmp_path: Path, embedder: Embedder
) -> None:
    chunks_wanted = chroma_max_batch_size(tmp_path / "probe") + 500
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "one-line.txt").write_text(SENTENCE * 2 * chunks_wanted)  # one line, no newline
    (docs / "good.md").write_text(GOOD_MARKDOWN)
    index = Index(IndexLocation(tmp_path / "chroma"), embedder)
    summary = IngestJob(index, SMALL_CHUNKS).run(docs, "docs")
    assert summary.failed == [] and summary.added == 2
    sources = [m["source"] for m in index.chunk_metadata("docs").values()]
    assert sources.count("one-line.txt") >= chunks_wanted
    assert summary.chunks == len(sources)
    (docs / "one-line.txt").write_text("The K3 kettle is discontinued.")  # stale: > one batch
    summary = IngestJob(index, SMALL_CHUNKS).run(docs, "docs")
    assert summary.updated == 1 and summary.chunks == 2


def test_a_document_chroma_refuses_fails_alone_and_keeps_its_stored_version(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refused.md").write_text("# Refused\n\nVersion one: the fuse is F2A.\n")
    index = Index(IndexLocation(tmp_path / "chroma"), embedder)
    IngestJob(index).run(docs, "docs")
    stored = index.chunk_metadata("docs")
    (docs / "refused.md").write_text("# Refused\n\nVersion two: the fuse is F3A.\n")
    (docs / "good.md").write_text(GOOD_MARKDOWN)
    upsert = chromadb.Collection.upsert

    def refusing(collection: chromadb.Collection, **batch: Any) -> None:
        if any(chunk.startswith("refused.md#") for chunk in batch["ids"]):
            raise InvalidArgumentError("a fault injected for refused.md")
        upsert(collection, **batch)

    monkeypatch.setattr(chromadb.Collection, "upsert", refusing)
    summary = IngestJob(index).run(docs, "docs")
    assert [issue.path for issue in summary.failed] == ["refused.md"]
    assert "refused" in summary.failed[0].reason
    assert summary.added == 1
    after = index.chunk_metadata("docs")
    assert {c: m for c, m in after.items() if m["source"] == "refused.md"} == stored
