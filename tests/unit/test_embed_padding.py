"""Embedder.embed batches texts of similar token counts, not similar character counts, so each
batch pads little: words of many characters and one token go with each other, not with runs of
one-character words; each text's vector is the one it gets alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from ingest.embedder import Embedder
from tests.support.models import models_cache_dir

MANY_TOKENS = ["a " * 20, "b " * 16]  # 40 and 32 characters, 20 and 16 tokens
FEW_TOKENS = ["understanding " * 4, "information " * 3]  # 56 and 36 characters, 4 and 3 tokens


@pytest.fixture(scope="module")
def onnx_embedder() -> Embedder:
    return Embedder(threads=1, backend="onnx", cache_dir=models_cache_dir())


def test_texts_are_batched_by_token_count(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [FEW_TOKENS[0], MANY_TOKENS[0], FEW_TOKENS[1], MANY_TOKENS[1]]
    assert [len(onnx_embedder.tokenize(text)) for text in texts] == [4, 20, 3, 16]
    encoder = onnx_embedder._encoder
    encode = encoder.encode
    batches: list[list[str]] = []

    def recorded(batch: Sequence[str]) -> np.ndarray:
        batches.append(list(batch))
        return encode(batch)

    monkeypatch.setattr(encoder, "encode", recorded)
    vectors = onnx_embedder.embed(texts, batch_size=2)
    assert sorted(map(sorted, batches)) == sorted([sorted(MANY_TOKENS), sorted(FEW_TOKENS)])
    for text, vector in zip(texts, vectors, strict=True):
        assert float(vector @ encode([text])[0]) >= 0.9999
