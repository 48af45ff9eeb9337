"""The ONNX embedding backends retrieve as well as torch on qa.jsonl, and an index refuses a
backend whose vectors differ from the ones it was built with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from ingest.embedder import EMBEDDER_NAME, EmbedBackend, Embedder, incompatibility
from ingest.index import Index, IndexLocation, IndexUnavailable
from ingest.pipeline import IngestJob
from tests.support.models import models_cache_dir
from tests.support.paths import CORPUS_DOCS, QA_FILE, ingest_options

ONNX_BACKENDS: tuple[EmbedBackend, ...] = ("onnx", "onnx-int8")


@dataclass(frozen=True)
class RetrievalQuality:
    """hit@5 and MRR@5 of the gold source over every question of qa.jsonl."""

    hit_at_5: float
    mrr: float


@cache
def onnx_embedder(backend: EmbedBackend) -> Embedder:
    """One embedder per backend for the module, its export built once in the tests' cache."""
    return Embedder(threads=1, backend=backend, cache_dir=models_cache_dir())


def qa_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in QA_FILE.read_text().splitlines() if line.strip()]


def retrieval_quality(index: Index, mode: str) -> RetrievalQuality:
    """Where each question's gold source first appears in the top five (by rank)."""
    ranks = []
    for row in qa_rows():
        sources = [p.source for p in index.search(row["question"], "docs", 5, mode=mode)]  # type: ignore[arg-type]
        ranks.append(sources.index(row["source"]) + 1 if row["source"] in sources else None)
    return RetrievalQuality(
        hit_at_5=sum(rank is not None for rank in ranks) / len(ranks),
        mrr=sum(1 / rank for rank in ranks if rank is not None) / len(ranks),
    )


@pytest.fixture(scope="module", params=ONNX_BACKENDS)
def backend_index(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Index:
    """The sample corpus ingested with one ONNX backend into its own embedded Chroma."""
    location = IndexLocation(tmp_path_factory.mktemp(f"index-{request.param}"))
    index = Index(location, onnx_embedder(request.param))
    IngestJob(index, ingest_options()).run(CORPUS_DOCS, "docs")
    return index


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_each_backend_retrieves_within_a_point_of_torch(
    backend_index: Index, corpus_index: Index, mode: str
) -> None:
    reference = retrieval_quality(corpus_index, mode)
    measured = retrieval_quality(backend_index, mode)
    assert measured.hit_at_5 >= reference.hit_at_5 - 0.01, (measured, reference)
    assert measured.mrr >= reference.mrr - 0.01, (measured, reference)


def test_onnx_fp32_vectors_agree_with_torch(embedder: Embedder, corpus_index: Index) -> None:
    """The rule that lets an fp32 ONNX process read a torch-built index (and back)."""
    onnx = onnx_embedder("onnx")
    chunks = corpus_index.chunk_metadata("docs")
    stored = corpus_index.vectors("docs", sorted(chunks)[:64])
    probes = [row["question"] for row in qa_rows()] + [v.text for v in stored.values()]
    cosines = np.sum(embedder.embed(probes) * onnx.embed(probes), axis=1)
    assert cosines.min() >= 0.999
    assert all(embedder.tokenize(text) == onnx.tokenize(text) for text in probes)


def test_an_int8_index_refuses_a_torch_query_saying_how_to_fix_it(
    embedder: Embedder, tmp_path: Path
) -> None:
    int8 = onnx_embedder("onnx-int8")
    location = IndexLocation(tmp_path / "chroma")
    vectors = int8.embed(["a passage about ladders"])
    Index(location, int8).upsert(
        "docs", ["c1"], vectors, ["a passage about ladders"], [{"source": "a.md"}]
    )
    assert Index(location, int8).search("ladders", "docs", 1)
    with pytest.raises(IndexUnavailable, match="LADDER_EMBED_BACKEND=onnx-int8"):
        Index(location, embedder).search("ladders", "docs", 1)


def test_a_torch_index_serves_onnx_queries_and_refuses_int8(corpus_index: Index) -> None:
    location = corpus_index.location
    onnx = onnx_embedder("onnx")
    assert Index(location, onnx).search("install", "docs", 3)
    int8 = onnx_embedder("onnx-int8")
    with pytest.raises(IndexUnavailable, match="built with the torch embedding backend"):
        Index(location, int8).search("install", "docs", 3)


def test_a_collection_from_before_backends_counts_as_torch() -> None:
    int8 = onnx_embedder("onnx-int8")
    assert incompatibility({"embedder": EMBEDDER_NAME}, int8) is not None
    assert incompatibility({"embedder": EMBEDDER_NAME, "embed_backend": "onnx-int8"}, int8) is None


def test_the_export_is_built_once_then_reused(tmp_path: Path) -> None:
    first = Embedder(threads=1, backend="onnx-int8", cache_dir=tmp_path)
    exports = sorted(tmp_path.rglob("*.onnx"))
    assert [path.name for path in exports] == ["model-int8.onnx", "model.onnx"]
    written = [path.stat().st_mtime_ns for path in exports]
    second = Embedder(threads=1, backend="onnx-int8", cache_dir=tmp_path)
    assert [path.stat().st_mtime_ns for path in exports] == written
    probe = ["where is the export kept"]
    assert np.allclose(first.embed(probe), second.embed(probe))
