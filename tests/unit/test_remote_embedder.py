"""The embeddings server's client against scripted answers (httpx.MockTransport): vectors come
back in input order at unit length, batches are split, long inputs cut, and every failure of the
server is one EmbeddingsUnavailable that says what happened."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ingest.embedder import EMBEDDER_NAME, bundled_embedder_path, incompatibility
from ingest.index import IndexUnavailable
from ingest.remote_embedder import (
    EmbeddingsUnavailable,
    EndpointOptions,
    RemoteEmbedder,
    embeddings_endpoint,
)
from service.knowledge import embedder as settings_embedder
from service.settings import Settings
from tests.support.processes import free_port

Handler = Callable[[httpx.Request], httpx.Response]


def vector_of(text: str) -> list[float]:
    """A deterministic, unnormalised 3-d vector per text."""
    return [float(len(text)), 1.0, 2.0]


def answering(
    seen: list[dict[str, Any]], reorder: bool = False, dimension: int | None = None
) -> Handler:
    """An OpenAI-shaped server that records each request body."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({**body, "authorization": request.headers.get("authorization")})
        items = [
            {"object": "embedding", "index": i, "embedding": vector_of(t)[: dimension or 3]}
            for i, t in enumerate(body["input"])
        ]
        data = list(reversed(items)) if reorder else items
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"]})

    return handle


def client(handler: Handler, **options: Any) -> RemoteEmbedder:
    settings = EndpointOptions(url="http://embeddings.test", model=EMBEDDER_NAME, retries=1)
    fields = {**settings.__dict__, **options}
    return RemoteEmbedder(EndpointOptions(**fields), transport=httpx.MockTransport(handler))


def test_vectors_come_back_in_input_order_at_unit_length() -> None:
    texts = ["a", "bbbb", "cc"]
    vectors = client(answering([], reorder=True)).embed(texts)
    expected = np.array([vector_of(t) for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected)
    assert vectors.dtype == np.float32


def test_a_batch_larger_than_the_batch_size_is_split_into_requests() -> None:
    seen: list[dict[str, Any]] = []
    texts = [f"text {n}" for n in range(20)]
    vectors = client(answering(seen), batch_size=8).embed(texts, batch_size=64)
    assert [len(body["input"]) for body in seen] == [8, 8, 4]
    assert [text for body in seen for text in body["input"]] == texts
    assert vectors.shape == (20, 3)


def test_requests_name_the_model_and_carry_the_key() -> None:
    seen: list[dict[str, Any]] = []
    client(answering(seen), model="acme/embed", api_key="sk-embed").embed(["x"])
    assert seen[0]["model"] == "acme/embed"
    assert seen[0]["authorization"] == "Bearer sk-embed"
    assert seen[0]["encoding_format"] == "float"


def test_long_inputs_are_cut_to_the_window_and_short_ones_kept() -> None:
    seen: list[dict[str, Any]] = []
    embedder = client(answering(seen), max_tokens=10)
    long = " ".join(f"word{n}" for n in range(100))
    embedder.embed([long, "short one"])
    sent_long, sent_short = seen[0]["input"]
    assert long.startswith(sent_long) and len(embedder.tokenize(sent_long)) == 8
    assert sent_short == "short one"


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://tei:80", "http://tei:80/v1/embeddings"),
        ("http://vllm:8000/v1/", "http://vllm:8000/v1/embeddings"),
    ],
)
def test_the_endpoint_is_found_under_the_base_url(url: str, endpoint: str) -> None:
    assert embeddings_endpoint(url) == endpoint


def refusing(*answers: httpx.Response | Exception) -> tuple[Handler, list[int]]:
    """A server that gives these answers in turn (the last one again when they run out)."""
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, calls


BAD_BODIES = {
    "not-json": httpx.Response(200, text="<html>oops</html>"),
    "no-data": httpx.Response(200, json={"object": "list"}),
    "too-few": httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0, 0.0]}]}),
    "repeated-index": httpx.Response(
        200, json={"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}
    ),
    "ragged": httpx.Response(
        200, json={"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1, 2]}]}
    ),
    "zero": httpx.Response(
        200, json={"data": [{"index": 0, "embedding": [0.0]}, {"index": 1, "embedding": [1.0]}]}
    ),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_malformed_body_is_refused_as_unavailable(body: httpx.Response) -> None:
    handler, _ = refusing(body)
    with pytest.raises(EmbeddingsUnavailable, match="malformed body"):
        client(handler).embed(["one", "two"])


def test_a_busy_server_is_retried_then_reported_with_its_message() -> None:
    busy = httpx.Response(503, json={"error": {"message": "queue full"}})
    handler, calls = refusing(busy)
    with pytest.raises(EmbeddingsUnavailable, match="HTTP 503: queue full"):
        client(handler, retries=2).embed(["x"])
    assert len(calls) == 3


def test_a_server_that_recovers_within_the_retries_answers() -> None:
    seen: list[dict[str, Any]] = []
    handler, calls = refusing(
        httpx.ConnectError("refused"), httpx.Response(502, text="bad gateway")
    )

    def then_ok(request: httpx.Request) -> httpx.Response:
        return handler(request) if len(calls) < 2 else answering(seen)(request)

    assert client(then_ok, retries=2).embed(["x"]).shape == (1, 3)


def test_a_refused_request_is_not_retried_and_names_the_reason() -> None:
    handler, calls = refusing(
        httpx.Response(404, json={"message": "The model `x` does not exist."})
    )
    with pytest.raises(EmbeddingsUnavailable, match="HTTP 404: The model `x` does not exist"):
        client(handler, retries=3).embed(["x"])
    assert len(calls) == 1


def test_a_read_timeout_is_reported_at_once() -> None:
    handler, calls = refusing(httpx.ReadTimeout("slow"))
    with pytest.raises(EmbeddingsUnavailable, match=r"did not answer within 10\.0 s"):
        client(handler, retries=3).embed(["x"])
    assert len(calls) == 1


def test_a_server_that_is_down_is_unavailable_to_the_index() -> None:
    options = EndpointOptions(url=f"http://127.0.0.1:{free_port()}", model="m", retries=0)
    with pytest.raises(IndexUnavailable, match="cannot be reached"):
        RemoteEmbedder(options).embed(["x"])


def test_a_change_of_dimension_is_refused() -> None:
    seen: list[dict[str, Any]] = []
    full, shorter = answering(seen), answering(seen, dimension=2)
    embedder = client(lambda request: (full if not seen else shorter)(request))
    assert embedder.dimension == 3
    with pytest.raises(EmbeddingsUnavailable, match="vectors of 2 dimensions after 3"):
        embedder.embed(["x"])


def test_the_model_name_decides_compatibility_and_remote_reads_fp32_indexes() -> None:
    bundled = client(answering([]))
    other = client(answering([]), model="acme/embed")
    built_local = {"embedder": EMBEDDER_NAME, "embed_backend": "onnx"}
    assert incompatibility(built_local, bundled) is None
    assert incompatibility({"embedder": EMBEDDER_NAME}, bundled) is None
    refused = incompatibility(built_local, other)
    assert refused is not None and EMBEDDER_NAME in refused and "acme/embed" in refused
    built_remote = {"embedder": "acme/embed", "embed_backend": "remote"}
    assert incompatibility(built_remote, other) is None
    assert incompatibility(built_remote, None) is not None
    int8 = {"embedder": EMBEDDER_NAME, "embed_backend": "onnx-int8"}
    assert "LADDER_EMBED_BACKEND=onnx-int8" in str(incompatibility(int8, bundled))


def test_the_settings_choose_the_remote_embedder_only_with_a_url(tmp_path: Path) -> None:
    remote = settings_embedder(
        Settings(embeddings_url="http://tei:80", embeddings_batch_size=7, embed_backend="torch")
    )
    assert isinstance(remote, RemoteEmbedder)
    assert (remote.name, remote.backend, remote.options.batch_size) == (EMBEDDER_NAME, "remote", 7)
    with pytest.raises(ValueError, match="http"):
        Settings(embeddings_url="tei:80")
    with pytest.raises(ValueError, match=r"holds no tokenizer\.json"):
        Settings(embeddings_tokenizer=tmp_path)
    (tmp_path / "tokenizer.json").write_text(
        bundled_embedder_path().joinpath("tokenizer.json").read_text()
    )
    assert settings_embedder(
        Settings(embeddings_url="http://tei:80", embeddings_tokenizer=tmp_path)
    ).tokenize("kettle")
