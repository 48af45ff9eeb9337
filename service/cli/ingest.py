"""The terminal side of ingestion and search: progress bars, summaries, passage listings."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ingest.passage import RetrievedPassage
from ingest.pipeline import IngestJob, IngestOptions, IngestSummary, ProgressCallback, discover
from ingest.readers import ReadLimits
from service.knowledge import chunking, open_index
from service.settings import Settings


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[ProgressCallback]:
    """A progress bar on a terminal; one line per document otherwise (for logs)."""
    console = Console(stderr=True)
    if not enabled:
        yield lambda path, outcome: None
    elif not console.is_terminal:
        yield lambda path, outcome: print(f"{outcome} {visible(path)}", file=sys.stderr, flush=True)
    else:
        columns = (TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("ingest", total=total)
            yield lambda path, outcome: bar.advance(task)


def run_ingest(
    settings: Settings, root: Path, collection: str, *, show_progress: bool
) -> IngestSummary:
    """Runs the ingestion job and prints its summary unless JSON was asked for."""
    options = IngestOptions(
        chunking=chunking(settings),
        reading=ReadLimits(
            max_pdf_pages=settings.max_pdf_pages, max_pdf_chars=settings.max_pdf_chars
        ),
        max_file_bytes=settings.max_file_bytes,
        embed_batch_size=settings.embed_batch_size,
        flush_chunks=settings.ingest_flush_chunks,
        read_ahead=settings.ingest_read_ahead,
        write_behind=settings.ingest_write_behind,
    )
    job = IngestJob(open_index(settings), options)
    total = len(discover(root)[0])
    with _progress(total, show_progress) as report:
        summary = job.run(root, collection, progress=report)
    if show_progress:
        _print_summary(summary)
    return summary


def _print_summary(summary: IngestSummary) -> None:
    console = Console()
    table = Table(title=f"ingested into {shown(repr(summary.collection))}", show_header=False)
    for name in ("added", "updated", "deleted", "unchanged", "chunks", "embedded", "seconds"):
        table.add_row(name, str(getattr(summary, name)))
    table.add_row("skipped", str(len(summary.skipped)))
    table.add_row("failed", str(len(summary.failed)))
    console.print(table)
    for issue in (*summary.skipped, *summary.failed):
        console.print(f"  [yellow]{shown(issue.path)}[/]: {shown(issue.reason)}", highlight=False)


def print_passages(passages: Sequence[RetrievedPassage]) -> None:
    """Prints passages with their scores and sources."""
    console = Console()
    if not passages:
        console.print("no passages found")
    for rank, passage in enumerate(passages, start=1):
        heading = f" ({passage.heading_path})" if passage.heading_path else ""
        console.print(
            f"[bold]{rank}. {passage.score:.3f}[/] {shown(passage.source + heading)}",
            highlight=False,
        )
        console.print(f"   {shown(passage.text[:300])}", highlight=False)


def visible(text: str) -> str:
    """Text with its control characters (a file name or passage can carry terminal escape
    sequences) replaced by U+FFFD; newlines and tabs kept."""
    return "".join(
        "\ufffd" if unicodedata.category(char) == "Cc" and char not in "\n\t" else char
        for char in text
    )


def shown(text: str) -> str:
    """Document-derived text made safe to print with Rich: visible, and its markup escaped."""
    return escape(visible(text))
