"""BM25 ranking and reciprocal rank fusion, on hand-made cases."""

from __future__ import annotations

import math

import numpy as np

from ingest.bm25 import BM25Index, reciprocal_rank_fusion, tokenize


def test_tokenize_lowercases_keeps_codes_and_drops_stop_words() -> None:
    assert tokenize("What is the SKU of BW-4471?") == ["sku", "bw-4471"]


def test_the_document_holding_a_rare_term_ranks_first() -> None:
    index = BM25Index(["kettle price list", "the kettle warranty", "warranty code BW-4471"])
    assert next(position for position, _ in index.top("bw-4471 warranty", 3)) == 2


def test_scores_follow_the_okapi_formula() -> None:
    texts = ["apple banana", "apple apple cherry", "cherry"]
    index = BM25Index(texts, k1=1.5, b=0.75)
    average = (2 + 3 + 1) / 3
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    expected = idf * 2 * 2.5 / (2 + 1.5 * (1 - 0.75 + 0.75 * 3 / average))
    scores = dict(index.top("apple", 3))
    assert scores[1] == np.float32(expected).item() or abs(scores[1] - expected) < 1e-5
    assert 2 not in scores


def test_mask_excludes_documents() -> None:
    index = BM25Index(["red kettle", "red toaster"])
    assert [p for p, _ in index.top("red", 2, allowed=np.array([False, True]))] == [1]


def test_rrf_adds_reciprocal_ranks() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=60)
    assert fused["b"] == 1 / 62 + 1 / 61
    assert fused["a"] == 1 / 61 and fused["c"] == 1 / 62
    assert max(fused, key=fused.__getitem__) == "b"
