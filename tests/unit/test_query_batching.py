"""Query embeddings that overlap are embedded in one model call, with no waiting window: the
queries that arrive while one embeds go together in the next call (at most the batch bound), each
caller gets its own vector (the same as embedding it alone), and a failed call fails every caller
in it without wedging the ones after."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ingest.embedder import Embedder
from ingest.query_cache import QueryCachingEmbedder
from tests.support.models import models_cache_dir

QUESTIONS = [
    json.loads(line)["question"]
    for line in (Path(__file__).parents[2] / "corpus" / "qa.jsonl").read_text().splitlines()[:6]
]


class GatedEmbedder:
    """Records each embed call's texts; the first call holds until `release()`, so the calls
    made meanwhile queue behind it. Vectors come from `inner`, or a text's length when None."""

    name = "gated"
    backend = "onnx"
    dimension = 384

    def __init__(self, inner: Embedder | None = None) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self._gate = threading.Event()
        self.failure: Exception | None = None

    def release(self) -> None:
        self._gate.set()

    def tokenize(self, text: str) -> list[int]:
        return [len(text)]

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.calls.append(list(texts))
        self.started.set()
        self._gate.wait(timeout=30)
        if self.failure is not None:
            raise self.failure
        if self.inner is not None:
            return self.inner.embed(texts, batch_size)
        return np.array([[float(len(text))] * self.dimension for text in texts], np.float32)


def wait_for(condition: Callable[[], bool]) -> None:
    """Polls condition until true (driven by the code's own progress, bounded for safety)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the queries never queued"
        time.sleep(0.005)


def overlapping(
    queries: QueryCachingEmbedder, gated: GatedEmbedder, texts: list[str]
) -> list[Future[np.ndarray]]:
    """texts[0] embeds first and holds; the rest are asked while it runs; then it finishes."""
    pool = ThreadPoolExecutor(len(texts))
    first = pool.submit(queries.embed, texts[:1])
    gated.started.wait(timeout=30)
    rest = [pool.submit(queries.embed, [text]) for text in texts[1:]]
    wait_for(lambda: queries.queued == len(texts) - 1)
    gated.release()
    pool.shutdown(wait=True)
    return [first, *rest]


def test_queries_asked_while_one_embeds_share_the_next_call() -> None:
    gated = GatedEmbedder()
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    answers = overlapping(QueryCachingEmbedder(gated, size=0, batch=8), gated, texts)
    assert gated.calls[0] == ["a"]
    assert sorted(gated.calls[1]) == texts[1:]
    assert len(gated.calls) == 2
    for text, answer in zip(texts, answers, strict=True):
        assert answer.result().shape == (1, 384)
        assert answer.result()[0, 0] == len(text)


def test_a_call_takes_at_most_the_batch_bound() -> None:
    gated = GatedEmbedder()
    texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]
    overlapping(QueryCachingEmbedder(gated, size=16, batch=2), gated, texts)
    assert [len(call) for call in gated.calls] == [1, 2, 2, 1]
    assert sorted(text for call in gated.calls for text in call) == texts


def test_a_lone_query_is_embedded_at_once_alone() -> None:
    gated = GatedEmbedder()
    gated.release()
    QueryCachingEmbedder(gated, size=0, batch=8).embed(["alone"])
    assert gated.calls == [["alone"]]


@pytest.fixture(scope="module")
def onnx_embedder() -> Embedder:
    return Embedder(threads=1, backend="onnx", cache_dir=models_cache_dir())


def test_batched_vectors_equal_each_query_embedded_alone(onnx_embedder: Embedder) -> None:
    gated = GatedEmbedder(onnx_embedder)
    answers = overlapping(QueryCachingEmbedder(gated, size=0, batch=8), gated, QUESTIONS)
    assert len(gated.calls) == 2 and len(gated.calls[1]) == len(QUESTIONS) - 1
    for question, answer in zip(QUESTIONS, answers, strict=True):
        alone = onnx_embedder.embed([question])[0]
        assert float(answer.result()[0] @ alone) >= 0.9999


def test_a_failed_call_fails_every_query_in_it_and_the_next_ones_still_embed() -> None:
    gated = GatedEmbedder()
    gated.failure = RuntimeError("embedder died")
    queries = QueryCachingEmbedder(gated, size=0, batch=8)
    answers = overlapping(queries, gated, ["a", "bb", "ccc", "dddd"])
    for answer in answers:
        with pytest.raises(RuntimeError, match="embedder died"):
            answer.result()
    gated.failure = None
    assert queries.embed(["after"])[0, 0] == len("after")
    assert queries.queued == 0
