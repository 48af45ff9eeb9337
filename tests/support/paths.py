"""Where the repository's corpus and task data lie, and the ingestion options tests share."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ingest.chunking import ChunkingOptions
from ingest.pipeline import IngestOptions

REPO = Path(__file__).resolve().parents[2]
CORPUS_DOCS = REPO / "corpus" / "docs"
QA_FILE = REPO / "corpus" / "qa.jsonl"
TRIAGE_DIR = REPO / "corpus" / "tasks" / "support-triage"
TRIAGE_PROMPT_MINIMAL = (TRIAGE_DIR / "system_prompt_minimal.txt").read_text().strip()


def ingest_options() -> IngestOptions:
    """Small batches, so writes interleave with embedding as in a large run."""
    return IngestOptions(chunking=ChunkingOptions(size=200, overlap=30), embed_batch_size=32)


@dataclass(frozen=True)
class TrainedAdapter:
    """A registered adapter trained by `ladder train`."""

    adapters_root: Path
    path: Path
    manifest: dict
    stderr: str


@contextmanager
def build_lock(cache: Path, name: str) -> Iterator[None]:
    """Held while one process (a session, or one of its xdist workers) builds the entry name of
    cache: the others wait, then find it built instead of building it again."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f".{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
