"""`citations: inline` through the app and the official client: the prompt asks for [n] markers,
and the answer's markers mark the `ladder.citations` they name (on the last chunk of a stream);
a marker naming no passage marks nothing and is reported as unmatched."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob
from service.api.app import create_app
from service.routing.plan import ANSWER_INSTRUCTION, CITED_ANSWER_INSTRUCTION
from service.settings import Settings
from tests.support.models import models_cache_dir
from tests.support.paths import CORPUS_DOCS, ingest_options
from tests.support.scripted_engine import ScriptedEngine

QUESTION = "My Aurora K3 kettle lid will not stay shut. Is it covered?"
ANSWER = "Yes, the K3 lid is recalled [2], and the warranty covers it [1][7]."
CONFIGS = """configurations:
  cited:
    retrieval: {collection: docs, k: 2, citations: inline}
  plain:
    retrieval: {collection: docs, k: 2}
"""


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[openai.OpenAI, ScriptedEngine]]:
    """The app over a real index of two corpus documents, answered by a scripted engine."""
    root = tmp_path_factory.mktemp("citations")
    docs = root / "docs"
    docs.mkdir()
    for name in ("policies/warranty.md", "safety/recall-2025-k3-lid.html"):
        shutil.copy(CORPUS_DOCS / name, docs / Path(name).name)
    index = Index(IndexLocation(root / "chroma"), embedder)
    IngestJob(index, ingest_options()).run(docs, "docs")
    (root / "configs.yaml").write_text(CONFIGS)
    settings = Settings(
        data_dir=root / "data",
        config=root / "configs.yaml",
        cache_dir_override=models_cache_dir(),
        adapters_dir=root / "no-adapters",
    )
    engine = ScriptedEngine()
    with TestClient(create_app(settings, engine=engine, index=index)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=http), engine


def ladder_of(response: Any) -> dict[str, Any]:
    return dict(response.model_extra["ladder"])


def test_the_markers_mark_the_citations_they_name(
    served: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, engine = served
    engine.enqueue(ANSWER)
    response = client.chat.completions.create(
        model="cited", messages=[{"role": "user", "content": QUESTION}]
    )
    assert response.choices[0].message.content == ANSWER
    ladder = ladder_of(response)
    assert [(c["number"], c["cited"]) for c in ladder["citations"]] == [(1, True), (2, True)]
    assert ladder["unmatched_markers"] == [7]
    prompt = engine.history[-1].messages[-1].content
    assert prompt.endswith(f"Question: {QUESTION}\n{CITED_ANSWER_INSTRUCTION}")


def test_a_stream_carries_the_mapped_citations_on_its_last_chunk(
    served: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, engine = served
    engine.enqueue("The lid is recalled ", "[", "2].")
    chunks = list(
        client.chat.completions.create(
            model="cited", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    first, last = ladder_of(chunks[0]), ladder_of(chunks[-1])
    assert all("cited" not in c for c in first["citations"])
    assert last == {
        **first,
        "citations": [{**c, "cited": c["number"] == 2} for c in first["citations"]],
        "unmatched_markers": [],
    }
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_without_inline_citations_markers_are_left_alone(
    served: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, engine = served
    engine.enqueue(ANSWER)
    response = client.chat.completions.create(
        model="plain", messages=[{"role": "user", "content": QUESTION}]
    )
    ladder = ladder_of(response)
    assert len(ladder["citations"]) == 2
    assert all("cited" not in c for c in ladder["citations"])
    assert "unmatched_markers" not in ladder
    prompt = engine.history[-1].messages[-1].content
    assert prompt.endswith(f"Question: {QUESTION}\n{ANSWER_INSTRUCTION}")
