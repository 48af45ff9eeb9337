"""A small in-memory BM25 index over a collection's chunks (Chroma has no local sparse index)."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "that",
        "the",
        "their",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stop words."""
    return [token for token in _TOKEN.findall(text.lower()) if token not in _STOPWORDS]


class BM25Index:
    """Okapi BM25 with postings in numpy arrays, so a query costs its terms' postings only."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.size = len(texts)
        lengths = np.zeros(self.size, dtype=np.float32)
        postings: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for position, text in enumerate(texts):
            counts = Counter(tokenize(text))
            lengths[position] = sum(counts.values())
            for term, count in counts.items():
                documents, frequencies = postings[term]
                documents.append(position)
                frequencies.append(count)
        average = float(lengths.mean()) if self.size else 0.0
        self._norm = k1 * (1 - b + b * lengths / (average or 1.0))
        self._k1 = k1
        self._postings = {
            term: (np.asarray(docs, dtype=np.int64), np.asarray(freqs, dtype=np.float32))
            for term, (docs, freqs) in postings.items()
        }

    def _idf(self, document_frequency: int) -> float:
        return math.log(1 + (self.size - document_frequency + 0.5) / (document_frequency + 0.5))

    def top(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k best positions with their scores; `allowed` is a boolean mask of candidates."""
        scores = np.zeros(self.size, dtype=np.float32)
        for term in set(tokenize(query)):
            if term not in self._postings:
                continue
            documents, frequencies = self._postings[term]
            weight = self._idf(len(documents)) * (self._k1 + 1)
            scores[documents] += weight * frequencies / (frequencies + self._norm[documents])
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        candidates = np.flatnonzero(scores > 0)
        if candidates.size > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        ranked = sorted(candidates.tolist(), key=lambda position: -scores[position])
        return [(position, float(scores[position])) for position in ranked]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = 60) -> dict[str, float]:
    """Fuses ranked id lists: each list adds 1 / (k + rank) to an id's score."""
    fused: dict[str, float] = defaultdict(float)
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] += 1.0 / (k + rank)
    return dict(fused)
