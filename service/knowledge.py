"""The knowledge layer's index, opened where the settings point: one way for the app and the CLI."""

from __future__ import annotations

import logging

from ingest.chunking import ChunkingOptions
from ingest.embedder import EMBEDDER_NAME, Embedder, TextEmbedder
from ingest.index import Index, IndexLocation, IndexUnavailable
from service.settings import Settings

log = logging.getLogger("ladder")


def index_location(settings: Settings) -> IndexLocation:
    """Where the index lives: a Chroma server, or the embedded database."""
    return IndexLocation(path=settings.chroma_dir, url=settings.chroma_url)


def chunking(settings: Settings) -> ChunkingOptions:
    """The ingestion's chunking options."""
    return ChunkingOptions(size=settings.chunk_size, overlap=settings.chunk_overlap)


def embedder(settings: Settings) -> TextEmbedder:
    """The embeddings server's client when LADDER_EMBEDDINGS_URL is set, else the bundled
    embedder on its backend."""
    if settings.embeddings_url is None:
        return Embedder(
            threads=settings.torch_threads,
            backend=settings.embed_backend,
            cache_dir=settings.cache_dir,
        )
    from ingest.remote_embedder import EndpointOptions, RemoteEmbedder

    return RemoteEmbedder(
        EndpointOptions(
            url=settings.embeddings_url,
            model=settings.embeddings_model or EMBEDDER_NAME,
            api_key=settings.embeddings_api_key,
            timeout_s=settings.embeddings_timeout_s,
            batch_size=settings.embeddings_batch_size,
            retries=settings.embeddings_retries,
            max_tokens=settings.embeddings_max_tokens,
            tokenizer=settings.embeddings_tokenizer,
        )
    )


def open_index(settings: Settings) -> Index:
    """The index with the embedder the settings choose; raises IndexUnavailable."""
    from ingest.query_cache import QueryCachingEmbedder

    chosen = embedder(settings)
    # An embeddings server batches concurrent requests itself (one more queue here would only
    # serialise their round trips); int8 vectors would move with their batch-mates.
    batched = isinstance(chosen, Embedder) and chosen.batch_invariant
    batch = settings.query_embed_batch if batched else 1
    queries = QueryCachingEmbedder(chosen, settings.query_embed_cache, batch)
    return Index(index_location(settings), queries)


def open_index_or_none(settings: Settings) -> Index | None:
    """The index, or None (with a warning) when Chroma cannot be reached: the service starts
    without its knowledge layer and /ready says so."""
    try:
        return open_index(settings)
    except IndexUnavailable as error:
        log.warning("index unavailable at start-up: %s", error)
        return None
