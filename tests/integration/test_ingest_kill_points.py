"""SIGKILL of the ingestion job at 20 random moments, each followed by a re-run: the index ends
exactly as a clean run leaves it (chunk ids, texts, metadata), with no duplicates and no orphans.

Half the runs start from an empty index, half from the index of an older version of the corpus
(edited, renamed, deleted and added documents), so kills also land amid updates and deletions.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from pathlib import Path

import pytest
from pytest_socket import socket_allow_hosts

from ingest.chunking import content_hash
from tests.support.ingest_worker import PRELOAD, Snapshot, ingest
from tests.support.paths import CORPUS_DOCS

pytestmark = pytest.mark.slow

TRIALS = 20
VERSION_A = [
    "policies/warranty.md",
    "policies/returns.md",
    "products/kettle-k3.md",
    "products/toaster-t2.md",
    "safety/recall-2025-k3-lid.html",
]


@dataclass
class Run:
    """How a child run ended."""

    snapshot: Snapshot | None
    seconds: float
    documents: int
    first_write: float


def run_job(context: ForkServerContext, root: Path, chroma: Path, kill_at: float | None) -> Run:
    """Runs the job in a forked child; SIGKILLs it kill_at seconds after its index is open."""
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=ingest, args=(str(root), str(chroma), sender))
    child.start()
    sender.close()
    deadline = began = time.monotonic() + 120.0
    snapshot, documents, first_write = None, 0, 0.0
    while (left := deadline - time.monotonic()) > 0 and receiver.poll(left):
        try:
            kind, payload = receiver.recv()
        except EOFError:
            break
        if kind == "started":
            began = time.monotonic()
            deadline = began + (kill_at if kill_at is not None else 120.0)
        elif kind == "done":
            snapshot = payload
            break
        else:
            documents += 1
            first_write = first_write or time.monotonic() - began
    seconds = time.monotonic() - began
    if kill_at is None:
        child.join(60)  # a finished job is left to exit on its own
    child.kill()
    child.join(30)
    receiver.close()
    assert kill_at is not None or snapshot is not None, f"the job ended with {child.exitcode}"
    return Run(snapshot, seconds, documents, first_write)


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


@pytest.fixture()
def forkserver() -> ForkServerContext:
    """Children forked from a server that imported torch, chromadb and the pipeline once."""
    # The forkserver is reached over a Unix socket; the network stays limited to loopback.
    socket_allow_hosts(["127.0.0.1", "::1"], allow_unix_socket=True)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def test_ingest_killed_at_twenty_random_points_converges_to_the_clean_index(
    tmp_path: Path, forkserver: ForkServerContext
) -> None:
    version_a, version_b = make_versions(tmp_path / "corpus")
    assert run_job(forkserver, version_a, tmp_path / "clean-a", None).snapshot
    fresh = run_job(forkserver, version_b, tmp_path / "clean-b", None)
    assert fresh.snapshot is not None
    assert_whole(fresh.snapshot, version_b)
    shutil.copytree(tmp_path / "clean-a", tmp_path / "a-to-b")
    incremental = run_job(forkserver, version_b, tmp_path / "a-to-b", None)
    assert incremental.snapshot == fresh.snapshot
    chooser, cut_mid_run = random.Random(20), 0
    for trial in range(TRIALS):
        chroma = tmp_path / f"trial-{trial}"
        if trial % 2:
            shutil.copytree(tmp_path / "clean-a", chroma)
        clean = incremental if trial % 2 else fresh
        # A random moment of the write phase, which starts with the first flush's embedding.
        kill_at = chooser.uniform(clean.first_write * 0.7, clean.seconds)
        killed = run_job(forkserver, version_b, chroma, kill_at)
        cut_mid_run += killed.snapshot is None and killed.documents > 0
        rerun = run_job(forkserver, version_b, chroma, None)
        assert rerun.snapshot == fresh.snapshot, f"trial {trial} killed after {killed}"
        shutil.rmtree(chroma)
    assert cut_mid_run >= TRIALS // 4, f"only {cut_mid_run} kills landed between writes"
