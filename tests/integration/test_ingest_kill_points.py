"""SIGKILL of the ingestion job right after each of its writes to Chroma, then a re-run: the
index ends exactly as a clean run leaves it (chunk ids, texts, metadata), no duplicate or stale
chunk left.

The job kills itself after its Nth write (tests/support/ingest_worker.py), so each kill lands at a
known point between two writes however loaded the machine is. Runs start from an empty index and
from the index of an older version of the corpus (edited, renamed, deleted and added documents),
so kills also land amid updates and deletions; one kill is of the real `ladder ingest` process.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from pathlib import Path

import pytest

from ingest.chunking import content_hash
from tests.support.ingest_worker import (
    COLLECTION,
    KILL_AFTER_WRITES,
    OPTIONS_ENV,
    PRELOAD,
    Snapshot,
    ingest,
)
from tests.support.paths import CORPUS_DOCS, REPO

pytestmark = pytest.mark.timeout(1200)

VERSION_A = [
    "policies/warranty.md",
    "policies/returns.md",
    "products/kettle-k3.md",
    "products/toaster-t2.md",
    "safety/recall-2025-k3-lid.html",
]
RUN_TIMEOUT_S = 300


@dataclass(frozen=True)
class Run:
    """How a child run ended: its snapshot when it finished, how many writes it made."""

    snapshot: Snapshot | None
    writes: int
    exitcode: int | None


@dataclass(frozen=True)
class CleanRuns:
    """The corpus versions and what uninterrupted runs make of them."""

    version_a: Path
    version_b: Path
    index_a: Path
    fresh: Run
    incremental: Run


def run_job(context: ForkServerContext, root: Path, chroma: Path, kill_after: int = 0) -> Run:
    """Runs the job in a forked child, which SIGKILLs itself after write kill_after (0: never)."""
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=ingest, args=(str(root), str(chroma), kill_after, sender))
    child.start()
    sender.close()
    snapshot, writes = None, 0
    while snapshot is None and receiver.poll(RUN_TIMEOUT_S):
        try:
            kind, payload = receiver.recv()
        except EOFError:
            break
        if kind == "write":
            writes = payload
        else:
            snapshot = payload
    child.join(RUN_TIMEOUT_S)
    child.kill()  # only if it hangs: a finished or killed child is already gone
    child.join()
    receiver.close()
    return Run(snapshot, writes, child.exitcode)


def make_versions(root: Path) -> tuple[Path, Path]:
    """Two versions of a small corpus: B edits two documents, renames, deletes and adds one."""
    version_a, version_b = root / "a", root / "b"
    for name in VERSION_A:
        (version_a / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS_DOCS / name, version_a / name)
    shutil.copytree(version_a, version_b)
    for name in ("policies/warranty.md", "products/kettle-k3.md"):
        edited = version_b / name
        edited.write_text(edited.read_text() + "\n\n## Update\n\nThis page was revised.\n")
    (version_b / "products/toaster-t2.md").rename(version_b / "products/toaster.md")
    (version_b / "policies/returns.md").unlink()
    shutil.copy(CORPUS_DOCS / "hub-api/webhooks.md", version_b / "webhooks.md")
    return version_a, version_b


def assert_whole(snapshot: Snapshot, corpus: Path) -> None:
    """Every chunk belongs to a current file's current version; each document is complete once."""
    per_document = Counter(str(meta["doc_id"]) for _, meta in snapshot.values())
    positions = Counter((str(meta["doc_id"]), meta["chunk_index"]) for _, meta in snapshot.values())
    assert max(positions.values()) == 1, "two chunks hold the same place of a document"
    for _, meta in snapshot.values():
        source = corpus / str(meta["doc_id"])
        assert source.is_file(), f"orphan chunk of {meta['doc_id']}"
        assert meta["content_hash"] == content_hash(source.read_bytes())
        assert per_document[str(meta["doc_id"])] == meta["chunk_count"]
    assert len(per_document) == sum(1 for path in corpus.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def ingest_forkserver() -> ForkServerContext:
    """Children forked from a server that imported torch, chromadb and the pipeline once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@pytest.fixture(scope="module")
def clean(
    tmp_path_factory: pytest.TempPathFactory, ingest_forkserver: ForkServerContext
) -> CleanRuns:
    """Version A indexed, B indexed from scratch, and B indexed over A: the last two agree."""
    root = tmp_path_factory.mktemp("kill-points")
    version_a, version_b = make_versions(root / "corpus")
    assert run_job(ingest_forkserver, version_a, root / "clean-a").snapshot is not None
    fresh = run_job(ingest_forkserver, version_b, root / "clean-b")
    assert fresh.snapshot is not None, f"the clean run ended with {fresh.exitcode}"
    assert_whole(fresh.snapshot, version_b)
    shutil.copytree(root / "clean-a", root / "a-to-b")
    incremental = run_job(ingest_forkserver, version_b, root / "a-to-b")
    assert incremental.snapshot == fresh.snapshot
    return CleanRuns(version_a, version_b, root / "clean-a", fresh, incremental)


def cut_points(clean: CleanRuns) -> Iterator[tuple[str, Path | None, int]]:
    """(start, index to start from, write to die after): every write of both runs but the last."""
    for start, index, run in (
        ("an empty index", None, clean.fresh),
        ("the older version's index", clean.index_a, clean.incremental),
    ):
        for kill_after in range(1, run.writes):
            yield start, index, kill_after


def test_ingest_killed_after_any_write_converges_to_the_clean_index(
    tmp_path: Path, ingest_forkserver: ForkServerContext, clean: CleanRuns
) -> None:
    assert clean.fresh.writes >= 5 and clean.incremental.writes >= 7, clean
    for trial, (start, index, kill_after) in enumerate(cut_points(clean)):
        chroma = tmp_path / f"trial-{trial}"
        if index is not None:
            shutil.copytree(index, chroma)
        killed = run_job(ingest_forkserver, clean.version_b, chroma, kill_after)
        where = f"from {start}, killed after write {kill_after}"
        assert (killed.exitcode, killed.writes) == (-signal.SIGKILL, kill_after), where
        rerun = run_job(ingest_forkserver, clean.version_b, chroma)
        assert rerun.snapshot == clean.fresh.snapshot, where
        shutil.rmtree(chroma)


def test_a_killed_ladder_ingest_is_completed_by_the_next_run(
    tmp_path: Path, ingest_forkserver: ForkServerContext, clean: CleanRuns
) -> None:
    kill_after = clean.fresh.writes // 2
    env = {**os.environ, **OPTIONS_ENV, "LADDER_DATA_DIR": str(tmp_path)}
    env[KILL_AFTER_WRITES] = str(kill_after)
    command = [sys.executable, "-m", "tests.support.ingest_worker", "ingest"]
    killed = subprocess.run(
        [*command, str(clean.version_b), "--collection", COLLECTION],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=RUN_TIMEOUT_S,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rerun = run_job(ingest_forkserver, clean.version_b, tmp_path / "chroma")
    assert rerun.snapshot == clean.fresh.snapshot
