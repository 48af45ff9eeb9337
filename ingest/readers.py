"""Turns a file into text sections with a title and heading paths, or says why it cannot."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".pdf"})
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
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
class ParsedDocument:
    """A readable document: its title and its sections in order."""

    title: str
    sections: tuple[Section, ...]
    format: str


def read_document(path: Path, raw: bytes) -> ParsedDocument:
    """Parses a file's bytes by its suffix; raises DocumentRejected for bad input."""
    suffix = path.suffix.lower()
    if not raw.strip():
        raise DocumentRejected("empty file")
    if suffix == ".pdf":
        document = _read_pdf(raw, path)
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
        match = None if in_fence else _MD_HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        flush()
        level, name = len(match.group(1)), match.group(2).strip()
        title = title or name if level == 1 else title
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
    flush()
    return ParsedDocument(title or _default_title(path), tuple(sections), "markdown")


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


def _read_pdf(raw: bytes, path: Path) -> ParsedDocument:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise DocumentRejected(f"unreadable PDF ({error})") from error
    sections = tuple(
        Section((f"page {number}",), text.strip())
        for number, text in enumerate(pages, start=1)
        if text.strip()
    )
    return ParsedDocument(str(meta_title or _default_title(path)), sections, "pdf")
