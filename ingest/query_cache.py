"""Query vectors kept in a small LRU: a repeated question is embedded once per process.

`QueryCachingEmbedder` wraps any embedder the index takes: a call with one text (a search query,
or the query a `select: similar` configuration compares its examples with) is served from the
cache, and misses that overlap are embedded together (ingest.query_batch); batches (ingestion, a
few-shot pool) pass straight through.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ingest.embedder import TextEmbedder
from ingest.query_batch import QueryBatcher


class QueryCachingEmbedder:
    """The wrapped embedder with its one-text vectors kept by query text, least recently used
    dropped beyond `size` (0 keeps none), and up to `batch` concurrent misses embedded in one
    call (1 embeds each alone). Thread-safe; the rows it returns are copies."""

    def __init__(self, embedder: TextEmbedder, size: int, batch: int = 1) -> None:
        self.wrapped = embedder
        self.size = size
        self._batcher = QueryBatcher(embedder.embed, batch) if batch > 1 else None
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The wrapped embedder's model."""
        return self.wrapped.name

    @property
    def backend(self) -> str:
        """The wrapped embedder's backend."""
        return self.wrapped.backend

    @property
    def dimension(self) -> int:
        """The wrapped embedder's vector size."""
        return self.wrapped.dimension

    def tokenize(self, text: str) -> list[int]:
        """The wrapped embedder's token ids."""
        return self.wrapped.tokenize(text)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors, one row per text; one text is looked up first and embedded on a miss (outside
        the lock, batched with the misses that overlap it)."""
        if len(texts) != 1:
            return self.wrapped.embed(texts, batch_size)
        if self.size <= 0:
            return self._one(texts, batch_size)
        # A digest, not the text, is kept: a query may be tens of kilobytes.
        key = hashlib.blake2b(texts[0].encode(), digest_size=16).digest()
        with self._lock:
            found = self._vectors.get(key)
            if found is not None:
                self._vectors.move_to_end(key)
                return found.copy()
        vectors = self._one(texts, batch_size)
        with self._lock:
            self._vectors[key] = vectors.copy()
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vectors

    @property
    def queued(self) -> int:
        """How many one-text misses wait for the batch that embeds now."""
        return 0 if self._batcher is None else self._batcher.queued

    def _one(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """One text's vector as a one-row array, through the batcher when there is one."""
        if self._batcher is None:
            return self.wrapped.embed(texts, batch_size)
        return np.array(self._batcher.vector(texts[0]), dtype=np.float32)[None, :]

    def __len__(self) -> int:
        return len(self._vectors)
