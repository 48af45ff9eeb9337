"""The ingestion job, SIGKILLed by itself right after its Nth write to Chroma.

As a forkserver child (`ingest`: preloaded once, forked per run, so a test can kill many runs
without paying as many interpreter and torch start-ups), or as the real command line:
`LADDER_TEST_KILL_AFTER_WRITES=N python -m tests.support.ingest_worker ingest FOLDER`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

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
KILL_AFTER_WRITES = "LADDER_TEST_KILL_AFTER_WRITES"
COLLECTION = "docs"
OPTIONS = IngestOptions(
    chunking=ChunkingOptions(size=200, overlap=30), embed_batch_size=8, flush_chunks=8
)
# The same options as the command line sees them.
OPTIONS_ENV = {"LADDER_EMBED_BATCH_SIZE": "8", "LADDER_INGEST_FLUSH_CHUNKS": "8"}
Snapshot = dict[str, tuple[str, dict[str, object]]]


def kill_after_writes(count: int, on_write: Callable[[int], None] = lambda written: None) -> None:
    """Makes this process call on_write(n) after its nth write to Chroma (an upsert, a delete or
    a revision mark) and SIGKILL itself right after write `count` (0: never)."""
    written = 0

    def counted(write: Callable[..., None]) -> Callable[..., None]:
        def wrapper(index: Index, collection: str, first: Any, *rest: Any) -> None:
            nonlocal written
            write(index, collection, first, *rest)
            if not first:
                return  # an upsert or delete of no ids leaves Chroma alone
            written += 1
            on_write(written)
            if written == count:
                os.kill(os.getpid(), signal.SIGKILL)

        return wrapper

    # Only in this process (a forked child or the command below); production code is untouched.
    Index.upsert = counted(Index.upsert)  # type: ignore[method-assign]
    Index.delete = counted(Index.delete)  # type: ignore[method-assign]
    Index.mark_revision = counted(Index.mark_revision)  # type: ignore[method-assign]


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


def ingest(root: str, chroma: str, kill_after: int, report: Connection) -> None:
    """Runs the job, reporting each write, then `done` with the index's snapshot."""
    kill_after_writes(kill_after, lambda written: report.send(("write", written)))
    index = Index(IndexLocation(Path(chroma)), Embedder(threads=1))
    IngestJob(index, OPTIONS).run(Path(root), COLLECTION)
    report.send(("done", snapshot(index)))


if __name__ == "__main__":
    kill_after_writes(int(os.environ.get(KILL_AFTER_WRITES, "0")))
    from service.cli.main import main

    main()
