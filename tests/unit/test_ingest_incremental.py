"""Re-runs embed only what changed: edits replace, deletions remove, renames leave no duplicate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob
from tests.support.paths import CORPUS_DOCS, ingest_options


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    """A copy of a slice of the corpus, free to edit."""
    root = tmp_path / "docs"
    for source in sorted(p for p in CORPUS_DOCS.rglob("*") if p.is_file())[:12]:
        target = root / source.relative_to(CORPUS_DOCS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return root


@pytest.fixture()
def job(tmp_path: Path, embedder: Embedder) -> IngestJob:
    return IngestJob(Index(IndexLocation(tmp_path / "chroma"), embedder), ingest_options())


def markdown_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.md"))


def test_unchanged_rerun_embeds_nothing_and_keeps_chunk_ids(docs: Path, job: IngestJob) -> None:
    first = job.run(docs, "docs")
    ids = set(job.index.chunk_metadata("docs"))
    second = job.run(docs, "docs")
    assert first.added > 0 and first.embedded > 0
    assert (second.added, second.updated, second.deleted, second.embedded) == (0, 0, 0, 0)
    assert second.unchanged == first.added
    assert set(job.index.chunk_metadata("docs")) == ids


def test_edited_document_has_its_old_chunks_replaced(docs: Path, job: IngestJob) -> None:
    job.run(docs, "docs")
    edited = markdown_files(docs)[0]
    relative = edited.relative_to(docs).as_posix()
    edited.write_text("# Replaced\n\nThe descaling interval is now 314 days for every model.\n")
    summary = job.run(docs, "docs")
    assert (summary.updated, summary.added, summary.deleted) == (1, 0, 0)
    chunks = {c: m for c, m in job.index.chunk_metadata("docs").items() if m["source"] == relative}
    texts = [stored.text for stored in job.index.vectors("docs", list(chunks)).values()]
    assert texts == ["The descaling interval is now 314 days for every model."]
    top = job.index.search("How often is descaling needed now?", "docs", 1)[0]
    assert top.source == relative


def test_deleted_document_disappears_from_the_index(docs: Path, job: IngestJob) -> None:
    job.run(docs, "docs")
    removed = markdown_files(docs)[1]
    relative = removed.relative_to(docs).as_posix()
    removed.unlink()
    summary = job.run(docs, "docs")
    assert summary.deleted == 1 and summary.embedded == 0
    assert all(m["source"] != relative for m in job.index.chunk_metadata("docs").values())


def test_renamed_document_leaves_no_duplicate_and_is_not_re_embedded(
    docs: Path, job: IngestJob
) -> None:
    job.run(docs, "docs")
    before = job.index.chunk_metadata("docs")
    original = markdown_files(docs)[2]
    old_name = original.relative_to(docs).as_posix()
    renamed = original.with_name("renamed-" + original.name)
    original.rename(renamed)
    summary = job.run(docs, "docs")
    after = job.index.chunk_metadata("docs")
    assert (summary.added, summary.deleted, summary.embedded) == (1, 1, 0)
    assert len(after) == len(before)
    assert not any(m["source"] == old_name for m in after.values())
    new_chunks = [m for m in after.values() if m["source"] == renamed.relative_to(docs).as_posix()]
    assert len(new_chunks) == sum(1 for m in before.values() if m["source"] == old_name)
