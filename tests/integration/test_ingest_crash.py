"""A SIGKILLed ingestion, run again, converges to exactly the index a clean run gives."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob
from tests.support.paths import CORPUS_DOCS, ingest_options


def start_ingest(data_dir: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data_dir),
        "LADDER_EMBED_BATCH_SIZE": "8",
        "LADDER_INGEST_FLUSH_CHUNKS": "8",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "ingest", str(CORPUS_DOCS), "--collection", "docs"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def kill_after_documents(process: subprocess.Popen[str], documents: int) -> int:
    """SIGKILLs the job once it has reported this many documents; returns how many it reported."""
    assert process.stderr is not None
    seen = 0
    for line in process.stderr:
        if line.startswith(("added ", "updated ")):
            seen += 1
            if seen >= documents:
                break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return seen


def kill_after_seconds(process: subprocess.Popen[str], seconds: float) -> None:
    """SIGKILLs the job at an arbitrary moment after its first write."""
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("added "):
            break
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def clean_ids(corpus_index: Index) -> set[str]:
    return set(corpus_index.chunk_metadata("docs"))


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_killed_ingest_rerun_gives_the_clean_runs_chunk_ids(
    trial: int, tmp_path: Path, embedder: Embedder, clean_ids: set[str]
) -> None:
    chooser = random.Random(trial)
    process = start_ingest(tmp_path)
    if trial < 2:
        assert kill_after_documents(process, chooser.randint(2, 30)) >= 2
    else:
        kill_after_seconds(process, chooser.uniform(0.05, 1.5))
    index = Index(IndexLocation(tmp_path / "chroma"), embedder)
    partial = set(index.chunk_metadata("docs"))
    assert partial and partial != clean_ids, "the kill must land before the job finished"
    IngestJob(index, ingest_options()).run(CORPUS_DOCS, "docs")
    stored = index.chunk_metadata("docs")
    assert set(stored) == clean_ids
    per_document = Counter(m["doc_id"] for m in stored.values())
    assert all(per_document[m["doc_id"]] == m["chunk_count"] for m in stored.values())
