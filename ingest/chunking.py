"""Splits parsed documents into sentence-aware chunks with deterministic ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ingest.readers import ParsedDocument

HEADING_SEPARATOR = " > "
# Longer runs without whitespace are counted in pieces of this many characters.
_LONG_WORD = 1024


@dataclass(frozen=True)
class ChunkingOptions:
    """Chunk size and overlap, counted in the embedder's tokens."""

    size: int = 200
    overlap: int = 30


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, ready to embed."""

    id: str
    index: int
    text: str
    heading_path: str

    @property
    def embed_text(self) -> str:
        """The text the embedder sees: the heading path gives the passage its context."""
        return f"{self.heading_path}\n{self.text}" if self.heading_path else self.text

    @property
    def text_hash(self) -> str:
        """Identifies the embedded text, so its vector can be reused."""
        return content_hash(self.embed_text.encode("utf-8"))


def content_hash(data: bytes) -> str:
    """The hash that identifies content across runs."""
    return hashlib.sha256(data).hexdigest()


def chunk_id(doc_id: str, index: int, document_hash: str) -> str:
    """A chunk's id: its document, its place, and the document version it belongs to."""
    return f"{doc_id}#{index}@{document_hash[:16]}"


class _WordCounts:
    """Counts a text's tokens as the sum of its whitespace-separated words' counts, tokenizing
    each distinct word once.

    The splitter counts every paragraph, sentence, phrase and word it tries, so a long line
    without breaks cost one tokenizer call per word, or per character. The embedder's WordPiece
    tokens never span whitespace, so the sum equals the whole text's count (tested on the corpus).
    """

    def __init__(self, tokenize: Callable[[str], list[int]], capacity: int = 200_000) -> None:
        self._tokenize = tokenize
        self._capacity = capacity
        self._counts: dict[str, int] = {}

    def __call__(self, text: str) -> range:
        """A sized stand-in for the token list: the splitter only takes its length."""
        total = 0
        for word in text.split():
            if len(word) <= _LONG_WORD:
                total += self._count(word)
            else:  # a run without spaces: tokenizing it whole took seconds and a GB at 2 MB
                pieces = range(0, len(word), _LONG_WORD)
                total += sum(self._count(word[at : at + _LONG_WORD]) for at in pieces)
        return range(total)

    def _count(self, word: str) -> int:
        count = self._counts.get(word)
        if count is None:
            if len(self._counts) >= self._capacity:
                self._counts.clear()  # bounded memory; a new document refills it
            count = self._counts[word] = len(self._tokenize(word))
        return count


def _windows(width: int) -> Callable[[str], list[str]]:
    """Cuts an unbreakable run into pieces of `width` characters (halving below it), where the
    splitter's last resort cut it into single characters: millions of splits for a long line."""

    def cut(text: str) -> list[str]:
        step = width if len(text) > width else max(1, len(text) // 2)
        return [text[start : start + step] for start in range(0, len(text), step)]

    return cut


class Chunker:
    """Splits sections with LlamaIndex's SentenceSplitter, never across headings."""

    def __init__(self, options: ChunkingOptions, tokenize: Callable[[str], list[int]]) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        self._splitter = SentenceSplitter(
            chunk_size=options.size,
            chunk_overlap=options.overlap,
            tokenizer=_WordCounts(tokenize),
            paragraph_separator="\n\n",
        )
        # A character is at most one of the embedder's tokens, so a window of `size` characters
        # fits a chunk; the splitter merges windows back up to the chunk size.
        self._splitter._sub_sentence_split_fns[-1] = _windows(options.size)

    def split(self, doc_id: str, document: ParsedDocument, document_hash: str) -> list[Chunk]:
        """The document's chunks in reading order."""
        chunks: list[Chunk] = []
        for section in document.sections:
            path = HEADING_SEPARATOR.join(section.heading_path)
            for piece in self._splitter.split_text(section.text):
                if piece.strip():
                    index = len(chunks)
                    chunks.append(Chunk(chunk_id(doc_id, index, document_hash), index, piece, path))
        return chunks
