"""Similar-example few-shot: the pool's examples nearest to a request, by the bundled embedder.

The pool is embedded once per content: vectors are kept in memory per process, keyed by a hash
of the pool's examples, so a hot reload that changes the few-shot file embeds the new pool and
one that leaves it alone reuses the vectors.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ingest.embedder import EmbedBackend
from ingest.index import Index
from service.routing.configs import FewShot, FewShotExample


class TextEmbedder(Protocol):
    """What selection needs of an embedder (ingest's Embedder is one)."""

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


@dataclass(frozen=True)
class _Pool:
    examples: tuple[FewShotExample, ...]
    vectors: np.ndarray


def pool_digest(examples: Sequence[FewShotExample]) -> str:
    """The content hash of a pool: changes exactly when an example does."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(
            example.user.encode("utf-8") + b"\0" + example.assistant.encode("utf-8") + b"\0"
        )
    return digest.hexdigest()


def _distinct_prompts(examples: Sequence[FewShotExample]) -> tuple[FewShotExample, ...]:
    """Each prompt once (its first example): a repeated prompt would fill two of `count` slots."""
    seen: set[str] = set()
    distinct = []
    for example in examples:
        prompt = example.user.strip()
        if prompt not in seen:
            seen.add(prompt)
            distinct.append(example)
    return tuple(distinct)


class ExampleSelector:
    """Picks a `select: similar` configuration's examples for a request, nearest first."""

    def __init__(self, embedder: Callable[[], TextEmbedder], kept_pools: int = 4) -> None:
        self._embedder = embedder
        self._kept_pools = kept_pools
        self._pools: OrderedDict[str, _Pool] = OrderedDict()
        self._lock = threading.Lock()

    def _pool(self, examples: Sequence[FewShotExample]) -> _Pool:
        key = pool_digest(examples)
        with self._lock:
            found = self._pools.get(key)
            if found is None:
                distinct = _distinct_prompts(examples)
                vectors = self._embedder().embed([e.user for e in distinct])
                found = _Pool(distinct, vectors)
                self._pools[key] = found
                while len(self._pools) > self._kept_pools:
                    self._pools.popitem(last=False)
            self._pools.move_to_end(key)
            return found

    def nearest(self, few_shot: FewShot, query: str) -> tuple[FewShotExample, ...]:
        """The `count` examples whose prompts are nearest to the query, nearest first."""
        pool = self._pool(few_shot.examples)
        count = few_shot.count or len(pool.examples)
        scores = pool.vectors @ self._embedder().embed([query])[0]
        # Stable on ties, so equally near examples keep their file order.
        order = np.argsort(-scores, kind="stable")[:count]
        return tuple(pool.examples[i] for i in order)


def bundled_embedder(
    index: Index | None,
    threads: int,
    backend: EmbedBackend = "torch",
    cache_dir: Path | None = None,
) -> Callable[[], TextEmbedder]:
    """The index's embedder when there is an index (one model in memory), else the bundled one
    (on the given backend) loaded on first use."""
    loaded: list[TextEmbedder] = []

    def embedder() -> TextEmbedder:
        if index is not None:
            return index.embedder
        if not loaded:
            from ingest.embedder import Embedder

            loaded.append(Embedder(threads=threads, backend=backend, cache_dir=cache_dir))
        return loaded[0]

    return embedder
