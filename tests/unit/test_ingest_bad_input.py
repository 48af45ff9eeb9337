"""Bad files are reported with their reason and skipped; the rest of the batch is ingested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob, IngestOptions

GOOD_MARKDOWN = "# Good\n\n## Facts\n\nThe Orbit blender ships with a 19-month warranty.\n"
LADDER = [sys.executable, "-m", "service.cli"]


def make_bad_folder(root: Path, outside: Path) -> None:
    """One good document and one file of each kind of bad input."""
    root.mkdir()
    (root / "good.md").write_text(GOOD_MARKDOWN)
    (root / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00binary zip")
    (root / "latin1.md").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "empty.md").write_text("   \n\n")
    (root / "huge.txt").write_text("word " * 400)
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / "dangling.md").symlink_to(root / "missing.md")
    outside.write_text("# Secret\n\nOutside the root.\n")
    (root / "escape.md").symlink_to(outside)


def test_each_kind_of_bad_file_is_skipped_with_its_reason(
    tmp_path: Path, embedder: Embedder
) -> None:
    make_bad_folder(tmp_path / "docs", tmp_path / "outside.md")
    index = Index(IndexLocation(tmp_path / "chroma"), embedder)
    summary = IngestJob(index, IngestOptions(max_file_bytes=1000)).run(tmp_path / "docs", "docs")
    reasons = {issue.path: issue.reason for issue in [*summary.skipped, *summary.failed]}
    assert "binary" in reasons["binary.txt"]
    assert "UTF-8" in reasons["latin1.md"]
    assert "empty" in reasons["empty.md"]
    assert "size limit" in reasons["huge.txt"]
    assert "PDF" in reasons["broken.pdf"]
    assert "unsupported" in reasons["image.png"]
    assert "unreadable" in reasons["dangling.md"]
    assert "leaves" in reasons["escape.md"]
    assert summary.added == 1
    sources = {m["source"] for m in index.chunk_metadata("docs").values()}
    assert sources == {"good.md"}


def run_ladder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LADDER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_missing_folder_is_a_one_line_error_with_exit_code_2(tmp_path: Path) -> None:
    result = run_ladder("ingest", str(tmp_path / "nowhere"), "--collection", "docs")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such folder" in result.stderr


def test_invalid_collection_name_is_a_one_line_error_with_exit_code_2(tmp_path: Path) -> None:
    result = run_ladder("ingest", str(tmp_path), "--collection", "no/slashes")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "collection name" in result.stderr


def test_cli_json_summary_lists_skipped_files(tmp_path: Path) -> None:
    make_bad_folder(tmp_path / "docs", tmp_path / "outside.md")
    result = run_ladder(
        "ingest",
        str(tmp_path / "docs"),
        "--collection",
        "docs",
        "--json",
        env={"LADDER_DATA_DIR": str(tmp_path / "data"), "LADDER_MAX_FILE_BYTES": "1000"},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == 1 and summary["chunks"] >= 1
    assert {issue["path"] for issue in summary["skipped"]} >= {"binary.txt", "huge.txt"}
    assert set(summary) >= {
        "added",
        "updated",
        "deleted",
        "unchanged",
        "skipped",
        "failed",
        "chunks",
        "seconds",
    }
