"""Query vectors kept in a small LRU: a repeated question is embedded once per process.

`QueryCachingEmbedder` wraps any embedder the index takes: a call with one text (a search query,
or the query a `select: similar` configuration compares its examples with) is served from the
cache; batches (ingestion, a few-shot pool) pass straight through.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class _Embedder(Protocol):
    """What the wrapper passes through (ingest.embedder's TextEmbedder)."""

    @property
    def name(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    def tokenize(self, text: str) -> list[int]: ...
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class QueryCachingEmbedder:
    """The wrapped embedder with its one-text vectors kept by query text, least recently used
    dropped beyond `size` (0 keeps none). Thread-safe; the rows it returns are copies."""

    def __init__(self, embedder: _Embedder, size: int) -> None:
        self.wrapped = embedder
        self.size = size
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
        the lock, so misses embed concurrently)."""
        if self.size <= 0 or len(texts) != 1:
            return self.wrapped.embed(texts, batch_size)
        # A digest, not the text, is kept: a query may be tens of kilobytes.
        key = hashlib.blake2b(texts[0].encode(), digest_size=16).digest()
        with self._lock:
            found = self._vectors.get(key)
            if found is not None:
                self._vectors.move_to_end(key)
                return found.copy()
        vectors = self.wrapped.embed(texts, batch_size)
        with self._lock:
            self._vectors[key] = vectors.copy()
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vectors

    def __len__(self) -> int:
        return len(self._vectors)
