"""A FIFO (or a link to one) in the folder is skipped with its reason; the job never blocks."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob

GOOD_MARKDOWN = "# Good\n\nThe Orbit blender ships with a 19-month warranty.\n"
RELEASE_AFTER_S = 30.0


@contextmanager
def released_if_blocked(fifo: Path) -> Iterator[None]:
    """After a while, keeps opening the FIFO's writing end, so a reader blocked on it (the bug)
    gets EOF each time and the test ends with a failure instead of hanging; a job that never
    opens it is unaffected."""
    done = threading.Event()

    def release() -> None:
        done.wait(RELEASE_AFTER_S)
        while not done.is_set():
            with suppress(OSError):  # ENXIO: nobody is reading, as it should be
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            done.wait(0.2)

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        done.set()
        releaser.join()


def test_a_fifo_is_skipped_as_not_a_regular_file(tmp_path: Path, embedder: Embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD_MARKDOWN)
    os.mkfifo(docs / "fifo.md")
    (docs / "link.md").symlink_to(docs / "fifo.md")
    index = Index(IndexLocation(tmp_path / "chroma"), embedder)
    with released_if_blocked(docs / "fifo.md"):
        summary = IngestJob(index).run(docs, "docs")
    reasons = {issue.path: issue.reason for issue in [*summary.skipped, *summary.failed]}
    assert reasons == {
        "fifo.md": "not a regular file (FIFO)",
        "link.md": "not a regular file (FIFO)",
    }
    assert summary.added == 1
    assert {m["source"] for m in index.chunk_metadata("docs").values()} == {"good.md"}
