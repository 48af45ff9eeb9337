"""The knowledge layer's index, opened where the settings point: one way for the app and the CLI."""

from __future__ import annotations

import logging

from ingest.chunking import ChunkingOptions
from ingest.index import Index, IndexLocation, IndexUnavailable
from service.settings import Settings

log = logging.getLogger("ladder")


def index_location(settings: Settings) -> IndexLocation:
    """Where the index lives: a Chroma server, or the embedded database."""
    return IndexLocation(path=settings.chroma_dir, url=settings.chroma_url)


def chunking(settings: Settings) -> ChunkingOptions:
    """The ingestion's chunking options."""
    return ChunkingOptions(size=settings.chunk_size, overlap=settings.chunk_overlap)


def open_index(settings: Settings) -> Index:
    """The index with the bundled embedder; raises IndexUnavailable."""
    from ingest.embedder import Embedder

    embedder = Embedder(
        threads=settings.torch_threads, backend=settings.embed_backend, cache_dir=settings.cache_dir
    )
    return Index(index_location(settings), embedder)


def open_index_or_none(settings: Settings) -> Index | None:
    """The index, or None (with a warning) when Chroma cannot be reached: the service starts
    without its knowledge layer and /ready says so."""
    try:
        return open_index(settings)
    except IndexUnavailable as error:
        log.warning("index unavailable at start-up: %s", error)
        return None
