"""The ingestion job as a forkserver child: preloaded once, forked per run, so a test can SIGKILL
twenty runs without paying twenty interpreter and torch start-ups."""

from __future__ import annotations

from multiprocessing.connection import Connection
from pathlib import Path

from ingest.chunking import ChunkingOptions
from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob, IngestOptions

# ladder imports these lazily; the forkserver imports them once, before any thread starts.
PRELOAD = [
    "tests.support.ingest_worker",
    "torch",
    "transformers",
    "sentence_transformers",
    "chromadb",
]
COLLECTION = "docs"
OPTIONS = IngestOptions(
    chunking=ChunkingOptions(size=200, overlap=30), embed_batch_size=8, flush_chunks=8
)
Snapshot = dict[str, tuple[str, dict[str, object]]]


def snapshot(index: Index) -> Snapshot:
    """Chunk id -> (text, metadata but the ingestion time): what two runs must agree on."""
    metadata = index.chunk_metadata(COLLECTION)
    stored = index.vectors(COLLECTION, sorted(metadata))
    return {
        chunk: (
            stored[chunk].text,
            {key: value for key, value in meta.items() if key != "ingested_at"},
        )
        for chunk, meta in metadata.items()
    }


def ingest(root: str, chroma: str, report: Connection) -> None:
    """Runs the job, reporting each document, then `done` with the index's snapshot."""
    index = Index(IndexLocation(Path(chroma)), Embedder(threads=1))
    report.send(("started", ""))
    IngestJob(index, OPTIONS).run(
        Path(root), COLLECTION, progress=lambda path, outcome: report.send((outcome, path))
    )
    report.send(("done", snapshot(index)))
