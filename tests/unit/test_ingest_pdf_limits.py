"""A PDF whose compressed pages expand to tens of megabytes of text is skipped with its reason,
the job's memory stays bounded, and the rest of the folder is ingested."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ingest.readers import DocumentRejected, read_document
from tests.support.hostile_pdf import compressed_text_pdf
from tests.support.peak_rss import run_measured

GOOD_MARKDOWN = "# Good\n\nThe Orbit blender ships with a 19-month warranty.\n"
# About 70 MB of text in a file of about 260 KB: the shape of the PDF in issue 12.
BOMB_PAGES, BOMB_PAGE_TEXT_BYTES = 70, 1_000_000
# `ladder ingest` with the embedder loaded peaks near 650 MB; unbounded extraction passed 10 GB.
CEILING_MB = 1_500
TIMEOUT_S = 400


@pytest.mark.timeout(TIMEOUT_S + 60)  # a real `ladder ingest`; the child's own bound is TIMEOUT_S
def test_text_bomb_pdf_is_skipped_within_bounded_memory(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.pdf").write_bytes(compressed_text_pdf(BOMB_PAGES, BOMB_PAGE_TEXT_BYTES))
    (docs / "good.md").write_text(GOOD_MARKDOWN)
    command = [sys.executable, "-m", "service.cli", "ingest", str(docs), "--json"]
    env = {**os.environ, "LADDER_DATA_DIR": str(tmp_path / "data")}
    run = run_measured(command, env, CEILING_MB, TIMEOUT_S, tmp_path)
    assert run.killed is None, f"{run.killed}; stderr: {run.stderr[-2000:]}"
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    reasons = {issue["path"]: issue["reason"] for issue in summary["skipped"]}
    assert reasons == {"manual.pdf": "over the text limit (more than 5000000 characters)"}
    assert summary["added"] == 1 and summary["failed"] == []
    print(f"text bomb PDF: {run.seconds:.1f} s, peak RSS {run.peak_rss_mb:.0f} MB")


def test_pdf_over_the_page_limit_is_rejected_before_extraction() -> None:
    from ingest.readers import ReadLimits  # here, so the module runs against code without it

    raw = compressed_text_pdf(pages=5, text_bytes_per_page=1_000)
    with pytest.raises(DocumentRejected, match=r"over the page limit \(5 > 4 pages\)"):
        read_document(Path("manual.pdf"), raw, ReadLimits(max_pdf_pages=4))


def test_pdf_text_limit_counts_every_page() -> None:
    from ingest.readers import ReadLimits

    raw = compressed_text_pdf(pages=3, text_bytes_per_page=20_000)
    with pytest.raises(DocumentRejected, match="over the text limit"):
        read_document(Path("manual.pdf"), raw, ReadLimits(max_pdf_chars=50_000))
    document = read_document(Path("manual.pdf"), raw, ReadLimits(max_pdf_chars=60_000))
    assert [section.heading_path for section in document.sections] == [
        ("page 1",),
        ("page 2",),
        ("page 3",),
    ]
