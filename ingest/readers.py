"""Turns a file into text sections with a title and heading paths, or says why it cannot."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pypdf import PageObject

SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".pdf"})
_HTML_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_HTML_BLOCKS = ("p", "li", "td", "th", "pre", "blockquote", "dt", "dd", "figcaption")


class DocumentRejected(Exception):
    """A file that cannot be ingested; the message says why."""


@dataclass(frozen=True)
class Section:
    """Text under one heading path (empty path: text before any heading)."""

    heading_path: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what one file may expand to: a PDF's compressed pages can hold far more text
    than its bytes on disk."""

    max_pdf_pages: int = 2_000
    max_pdf_chars: int = 5_000_000


@dataclass(frozen=True)
class ParsedDocument:
    """A readable document: its title and its sections in order."""

    title: str
    sections: tuple[Section, ...]
    format: str


def special_kind(path: Path) -> str | None:
    """What a path is when it exists and is not a regular file (a FIFO blocks a reader)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # reading it says why
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"))
    return next((name for test, name in kinds if test(mode)), "special file")


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; raises DocumentRejected unless it is a regular file within max_bytes.

    Opened without blocking and checked on the open descriptor, so a file swapped for a FIFO or
    grown after discovery is refused too.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise DocumentRejected("not a regular file")
        raw = handle.read(max_bytes + 1) if status.st_size <= max_bytes else b""
    if status.st_size > max_bytes or len(raw) > max_bytes:
        size = max(status.st_size, len(raw))
        raise DocumentRejected(f"over the size limit ({size} > {max_bytes} bytes)")
    return raw


def read_document(path: Path, raw: bytes, limits: ReadLimits | None = None) -> ParsedDocument:
    """Parses a file's bytes by its suffix; raises DocumentRejected for bad input."""
    suffix = path.suffix.lower()
    if not raw.strip():
        raise DocumentRejected("empty file")
    if suffix == ".pdf":
        document = _read_pdf(raw, path, limits or ReadLimits())
    else:
        text = _decode_text(raw)
        if suffix in (".html", ".htm"):
            document = _read_html(text, path)
        elif suffix in (".md", ".markdown"):
            document = _read_markdown(text, path)
        else:
            document = ParsedDocument(_default_title(path), (Section((), text),), "text")
    if not any(section.text.strip() for section in document.sections):
        raise DocumentRejected("no text after parsing")
    return document


def _decode_text(raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise DocumentRejected("binary content (NUL bytes) in a text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentRejected(f"not valid UTF-8 (byte {error.start})") from error
    return text.replace("\r\n", "\n")


def _default_title(path: Path) -> str:
    return path.stem.replace("-", " ").replace("_", " ").strip() or path.name


def _read_markdown(text: str, path: Path) -> ParsedDocument:
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    title: str | None = None
    in_fence = False

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            sections.append(Section(tuple(name for _, name in stack), body))
        lines.clear()

    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        heading = None if in_fence else markdown_heading(line)
        if heading is None:
            lines.append(line)
            continue
        flush()
        level, name = heading
        title = title or name if level == 1 else title
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
    flush()
    return ParsedDocument(title or _default_title(path), tuple(sections), "markdown")


def markdown_heading(line: str) -> tuple[int, str] | None:
    """An ATX heading's level and name (closing #s dropped), or None.

    Written with string methods, not a regular expression: `(.+?)\\s*#*\\s*$` backtracks
    cubically on a long run of spaces. Matches what that pattern matched, name for name.
    """
    marks = len(line) - len(line.lstrip("#"))
    after = line[marks:]
    rest = after.lstrip()
    if not 1 <= marks <= 6 or rest == after:
        return None
    if not rest:  # only whitespace after the marks: a heading with an empty name
        return (marks, "") if len(after) >= 2 else None
    name = rest.rstrip().rstrip("#").rstrip()
    return marks, name or rest[0]


def _read_html(text: str, path: Path) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    heading = soup.find("title") or soup.find("h1")
    title = heading.get_text(" ", strip=True) if heading is not None else ""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    blocks: list[str] = []

    def flush() -> None:
        if blocks:
            sections.append(Section(tuple(name for _, name in stack), "\n".join(blocks)))
        blocks.clear()

    for element in soup.find_all([*_HTML_HEADINGS, *_HTML_BLOCKS]):
        if element.name in _HTML_HEADINGS:
            flush()
            level = int(element.name[1])
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, element.get_text(" ", strip=True)))
        elif not element.find_parent(_HTML_BLOCKS):
            piece = element.get_text(" ", strip=True)
            if piece:
                blocks.append(piece)
    flush()
    if not sections:
        body = (soup.body or soup).get_text("\n", strip=True)
        sections.append(Section((), body))
    return ParsedDocument(title or _default_title(path), tuple(sections), "html")


def _read_pdf(raw: bytes, path: Path, limits: ReadLimits) -> ParsedDocument:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if len(reader.pages) > limits.max_pdf_pages:
            raise DocumentRejected(
                f"over the page limit ({len(reader.pages)} > {limits.max_pdf_pages} pages)"
            )
        pages = _pdf_page_texts(reader.pages, limits.max_pdf_chars)
        meta_title = reader.metadata.title if reader.metadata else None
    except (PyPdfError, ValueError, KeyError, TypeError) as error:
        raise DocumentRejected(f"unreadable PDF ({error})") from error
    sections = tuple(
        Section((f"page {number}",), text.strip())
        for number, text in enumerate(pages, start=1)
        if text.strip()
    )
    return ParsedDocument(str(meta_title or _default_title(path)), sections, "pdf")


def _pdf_page_texts(pages: Iterable[PageObject], max_chars: int) -> list[str]:
    """Each page's text; stops as soon as the text passes max_chars, while pypdf produces it,
    so the work and memory a file costs follow the limit, not what its streams decompress to."""
    extracted = 0

    def count(text: str, *_: object) -> None:
        nonlocal extracted
        extracted += len(text)
        if extracted > max_chars:
            raise DocumentRejected(f"over the text limit (more than {max_chars} characters)")

    return [page.extract_text(visitor_text=count) or "" for page in pages]
