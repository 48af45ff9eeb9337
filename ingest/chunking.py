"""Splits parsed documents into sentence-aware chunks with deterministic ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ingest.readers import ParsedDocument

HEADING_SEPARATOR = " > "


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


class Chunker:
    """Splits sections with LlamaIndex's SentenceSplitter, never across headings."""

    def __init__(self, options: ChunkingOptions, tokenize: Callable[[str], list[int]]) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        self._splitter = SentenceSplitter(
            chunk_size=options.size,
            chunk_overlap=options.overlap,
            tokenizer=tokenize,
            paragraph_separator="\n\n",
        )

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
