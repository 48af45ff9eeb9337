"""Ingest the sample corpus into a real Chroma and find each question's gold source."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob
from tests.support.paths import CORPUS_DOCS, QA_FILE, ingest_options

REQUIRED_METADATA = {
    "source",
    "title",
    "heading_path",
    "chunk_index",
    "content_hash",
    "ingested_at",
}


def sample_questions(count: int = 10) -> list[dict[str, str]]:
    """Every n-th question of qa.jsonl, so the sample spans the corpus's formats."""
    rows = [json.loads(line) for line in QA_FILE.read_text().splitlines() if line.strip()]
    step = max(1, len(rows) // count)
    return rows[::step][:count]


@pytest.fixture(scope="module")
def server_index(chroma_server: str, embedder: Embedder, tmp_path_factory) -> Index:
    """The sample corpus ingested into a real `chroma run` server."""
    index = Index(IndexLocation(tmp_path_factory.mktemp("unused"), url=chroma_server), embedder)
    IngestJob(index, ingest_options()).run(CORPUS_DOCS, "docs")
    return index


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_each_sample_question_finds_its_gold_source_in_the_top_five(
    corpus_index: Index, mode: str
) -> None:
    misses = []
    for row in sample_questions():
        sources = [p.source for p in corpus_index.search(row["question"], "docs", 5, mode=mode)]
        if row["source"] not in sources:
            misses.append((row["question"], row["source"], sources))
    assert not misses


@pytest.mark.server
def test_a_chroma_server_answers_the_same_questions(server_index: Index) -> None:
    misses = []
    for row in sample_questions():
        sources = [p.source for p in server_index.search(row["question"], "docs", 5)]
        if row["source"] not in sources:
            misses.append((row["question"], row["source"], sources))
    assert not misses


@pytest.mark.server
def test_server_and_embedded_indexes_hold_the_same_chunks(
    server_index: Index, corpus_index: Index
) -> None:
    assert set(server_index.chunk_metadata("docs")) == set(corpus_index.chunk_metadata("docs"))


def test_every_chunk_carries_its_metadata(corpus_index: Index) -> None:
    stored = corpus_index.chunk_metadata("docs")
    assert stored
    for metadata in stored.values():
        assert set(metadata) >= REQUIRED_METADATA
    formats = {metadata["format"] for metadata in stored.values()}
    assert {"markdown", "html", "pdf"} <= formats
    assert any(" > " in str(metadata["heading_path"]) for metadata in stored.values())


def test_scores_are_cosine_similarities_of_query_and_passage(
    corpus_index: Index, embedder: Embedder
) -> None:
    question = sample_questions(1)[0]["question"]
    passages = corpus_index.search(question, "docs", 5)
    stored = corpus_index.vectors("docs", [p.chunk_id for p in passages])
    query = embedder.embed([question])[0]
    for passage in passages:
        assert -1.0 <= passage.score <= 1.0
        expected = float(np.dot(query, stored[passage.chunk_id].embedding))
        assert passage.score == pytest.approx(expected, abs=1e-4)
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_a_metadata_filter_keeps_only_matching_passages(corpus_index: Index, mode: str) -> None:
    row = sample_questions(1)[0]
    other = next(
        s for s in corpus_index.chunk_metadata("docs").values() if s["source"] != row["source"]
    )
    passages = corpus_index.search(row["question"], "docs", 5, {"source": other["source"]}, mode)
    assert passages
    assert {p.source for p in passages} == {other["source"]}
