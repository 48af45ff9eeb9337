"""LADDER_EMBEDDINGS_URL against a real embeddings server (tests/support/embeddings_server.py, a
process that knows nothing of ladder): ingestion and queries embed through it and retrieve as
well as the local embedder; `ladder ingest` and a RAG chat request through `ladder serve` work
with it; a server that is down or hangs is a clear error (CLI exit 1, a 503 on the chat path),
and the index refuses a query with another model than the one it was built with."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from ingest.embedder import EMBEDDER_NAME, Embedder, bundled_embedder_path
from ingest.index import Index, IndexLocation, IndexUnavailable
from ingest.onnx_embedder import exported_model
from ingest.pipeline import IngestJob
from ingest.remote_embedder import EmbeddingsUnavailable, EndpointOptions, RemoteEmbedder
from tests.support.fault_servers import ManagedServer, UpstreamProcess
from tests.support.ladder_process import ladder_serve, vllm_engine_env
from tests.support.models import models_cache_dir
from tests.support.paths import CORPUS_DOCS, QA_FILE, REPO, ingest_options
from tests.support.processes import free_port, wait_for_http

pytestmark = pytest.mark.server

SERVER = REPO / "tests" / "support" / "embeddings_server.py"
BATCH = 16
RETRIEVAL_TIMEOUT_S = 5
CONFIGS = """configurations:
  rag:
    retrieval: {collection: docs, k: 3, on_error: fail}
"""


class EmbeddingsServer(ManagedServer):
    """tests/support/embeddings_server.py serving the bundled model's ONNX export."""

    def start(self) -> None:
        """(Re)starts the server on its port and waits for /health."""
        onnx = exported_model(bundled_embedder_path(), models_cache_dir(), quantized=False)
        command = [sys.executable, str(SERVER), "--port", str(self.port), "--onnx", str(onnx)]
        options = ["--model-dir", str(bundled_embedder_path()), "--served-name", EMBEDDER_NAME]
        wait_for_http(f"{self.url}/health", 60, self._spawn([*command, *options]), self.log)

    def request_inputs(self) -> list[int]:
        """How many inputs each embeddings request carried, in order."""
        return list(httpx.get(f"{self.url}/metrics").json()["request_inputs"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddingsServer]:
    started = EmbeddingsServer(free_port(), tmp_path_factory.mktemp("embeddings") / "server.log")
    started.start()
    try:
        yield started
    finally:
        started.stop()


def remote(server: EmbeddingsServer, model: str = EMBEDDER_NAME) -> RemoteEmbedder:
    return RemoteEmbedder(EndpointOptions(url=server.url, model=model, batch_size=BATCH))


@pytest.fixture(scope="module")
def remote_index(server: EmbeddingsServer, tmp_path_factory: pytest.TempPathFactory) -> Index:
    """The sample corpus ingested through the server into an embedded Chroma."""
    index = Index(IndexLocation(tmp_path_factory.mktemp("remote-index")), remote(server))
    IngestJob(index, ingest_options()).run(CORPUS_DOCS, "docs")
    return index


def qa_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in QA_FILE.read_text().splitlines() if line.strip()]


def hit_at_5(index: Index) -> float:
    """The share of qa.jsonl questions whose gold source is among the top five passages."""
    rows = qa_rows()
    hits = sum(
        row["source"] in {p.source for p in index.search(row["question"], "docs", 5)}
        for row in rows
    )
    return hits / len(rows)


def test_an_index_ingested_remotely_retrieves_as_well_as_a_local_one(
    remote_index: Index, corpus_index: Index
) -> None:
    assert remote_index.count("docs") == corpus_index.count("docs")
    assert hit_at_5(remote_index) >= hit_at_5(corpus_index) - 0.01


def test_the_served_bundled_model_agrees_with_the_local_one(
    server: EmbeddingsServer, embedder: Embedder, corpus_index: Index
) -> None:
    """The rule that lets a remote process read a locally built index (and back)."""
    stored = corpus_index.vectors("docs", sorted(corpus_index.chunk_metadata("docs"))[:32])
    probes = [row["question"] for row in qa_rows()[:32]] + [v.text for v in stored.values()]
    cosines = np.sum(remote(server).embed(probes) * embedder.embed(probes), axis=1)
    assert cosines.min() >= 0.999
    question = qa_rows()[0]["question"]
    by_remote = Index(corpus_index.location, remote(server)).search(question, "docs", 5)
    assert [p.chunk_id for p in by_remote] == [
        p.chunk_id for p in corpus_index.search(question, "docs", 5)
    ]


def test_requests_carry_at_most_the_batch_size(server: EmbeddingsServer) -> None:
    before = len(server.request_inputs())
    vectors = remote(server).embed([f"passage number {n}" for n in range(2 * BATCH + 5)])
    assert server.request_inputs()[before:] == [BATCH, BATCH, 5]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_collection_refuses_a_query_with_another_model(
    server: EmbeddingsServer, remote_index: Index
) -> None:
    other = Index(remote_index.location, remote(server, "acme/embed-large"))
    refusal = f"built with the embedding model {EMBEDDER_NAME}, not this process's acme/embed"
    with pytest.raises(IndexUnavailable, match=refusal):
        other.count("docs")
    with pytest.raises(EmbeddingsUnavailable, match="HTTP 404: The model `acme/embed-large`"):
        other.search("kettle", "docs", 3)


def ladder_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    ladder = Path(sys.executable).parent / "ladder"
    run = [str(ladder), *args]
    return subprocess.run(run, env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def ladder_setup(
    server: EmbeddingsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], Path]]:
    """The environment of a ladder pointed at the embeddings server, and two corpus documents."""
    workdir = tmp_path_factory.mktemp("ladder-remote")
    upstream = UpstreamProcess(free_port(), workdir / "upstream.log")
    upstream.start()
    env = vllm_engine_env(workdir, upstream.url, CONFIGS)
    env |= {
        "LADDER_EMBEDDINGS_URL": server.url,
        "LADDER_EMBEDDINGS_BATCH_SIZE": str(BATCH),
        "LADDER_RETRIEVAL_TIMEOUT_S": str(RETRIEVAL_TIMEOUT_S),
        "LADDER_EMBEDDINGS_TIMEOUT_S": str(2 * RETRIEVAL_TIMEOUT_S),
    }
    docs = workdir / "docs"
    docs.mkdir()
    for name in ("policies/warranty.md", "safety/recall-2025-k3-lid.html"):
        shutil.copy(CORPUS_DOCS / name, docs / Path(name).name)
    try:
        yield env, docs
    finally:
        upstream.kill()


def test_ladder_ingest_cannot_reach_a_server_that_is_down(
    ladder_setup: tuple[dict[str, str], Path],
) -> None:
    env, docs = ladder_setup
    down = f"http://127.0.0.1:{free_port()}"
    result = ladder_cli({**env, "LADDER_EMBEDDINGS_URL": down}, "ingest", str(docs), "--json")
    assert result.returncode == 1
    assert f"the embeddings server {down}/v1/embeddings cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def chat(
    server: EmbeddingsServer, ladder_setup: tuple[dict[str, str], Path]
) -> Iterator[openai.OpenAI]:
    """`ladder ingest` then `ladder serve`, both embedding through the server."""
    env, docs = ladder_setup
    before = sum(server.request_inputs())
    ingested = ladder_cli(env, "ingest", str(docs), "--json")
    assert ingested.returncode == 0, ingested.stderr
    assert sum(server.request_inputs()) - before == json.loads(ingested.stdout)["embedded"] > 0
    with ladder_serve(env, Path(env["LADDER_DATA_DIR"]) / "ladder.log") as ladder:
        yield openai.OpenAI(base_url=f"{ladder.base}/v1", api_key="-", max_retries=0, timeout=30)


def ask(chat: openai.OpenAI, question: str) -> dict[str, Any]:
    """What ladder says it did for a RAG question (each test asks its own: no cache answers)."""
    response = chat.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": question}]
    )
    return dict((response.model_extra or {})["ladder"])


def test_a_rag_request_retrieves_through_the_server(
    chat: openai.OpenAI, server: EmbeddingsServer
) -> None:
    before = len(server.request_inputs())
    ladder = ask(chat, "Is the lid of the Aurora K3 kettle recalled?")
    assert ladder["retrieval"] == "used"
    assert "recall-2025-k3-lid.html" in {c["source"] for c in ladder["citations"]}
    assert server.request_inputs()[before:] == [1]


def test_a_server_that_is_down_is_a_503_then_service_resumes(
    chat: openai.OpenAI, server: EmbeddingsServer
) -> None:
    server.kill()
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            ask(chat, "How long is the warranty of a kettle?")
        assert refused.value.status_code == 503
        error = refused.value.response.json()["error"]
        assert error["code"] == "retrieval_unavailable"
        assert "embeddings server" in error["message"] and "cannot be reached" in error["message"]
    finally:
        server.start()
    assert ask(chat, "What does the warranty cover?")["retrieval"] == "used"


def test_a_server_that_hangs_is_a_503_within_the_retrieval_timeout(
    chat: openai.OpenAI, server: EmbeddingsServer
) -> None:
    server.pause()
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            ask(chat, "Which kettles does the recall cover?")
        assert refused.value.status_code == 503
        error = refused.value.response.json()["error"]
        assert error["code"] == "retrieval_unavailable"
        assert f"no answer in {RETRIEVAL_TIMEOUT_S}" in error["message"]
    finally:
        server.resume()
    assert ask(chat, "Where is the K3 lid recall described?")["retrieval"] == "used"
