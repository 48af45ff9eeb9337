"""Embeddings from an OpenAI-compatible `/v1/embeddings` server (vLLM serving an embedding model,
Text Embeddings Inference): batches out, unit vectors back in input order, and every way the
server can fail translated once, here, into EmbeddingsUnavailable."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

from ingest.embedder import bundled_embedder_path
from ingest.index import IndexUnavailable

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Worth another try: the server is busy, restarting or behind a proxy that lost it.
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_SPECIAL_TOKENS = 2  # [CLS] and [SEP]: what a BERT-style server adds to each input


class EmbeddingsUnavailable(IndexUnavailable):
    """The embeddings server is unreachable, too slow, refused a batch or answered nonsense."""


@dataclass(frozen=True)
class EndpointOptions:
    """Where the embeddings server is and how ladder talks to it (LADDER_EMBEDDINGS_*)."""

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 10.0
    batch_size: int = 32
    retries: int = 2
    max_tokens: int = 256
    tokenizer: Path | None = None


def embeddings_endpoint(url: str) -> str:
    """The embeddings route of a server's base URL (a trailing /v1 is accepted)."""
    base = url.rstrip("/")
    return f"{base}/embeddings" if base.endswith("/v1") else f"{base}/v1/embeddings"


def unit_vectors(payload: object, count: int) -> np.ndarray:
    """The vectors of an embeddings response in input order (by each item's `index`), scaled to
    unit length; ValueError saying what is wrong with the body."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ValueError("the body has no `data` list")
    if len(data) != count:
        raise ValueError(f"{len(data)} embeddings came back for {count} inputs")
    rows: list[object] = [None] * count
    for position, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
            raise ValueError(f"item {position} has no `embedding` list")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
            raise ValueError(f"item {position} has a missing, repeated or out-of-range index")
        rows[index] = item["embedding"]
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise ValueError("the embeddings are not equally long lists of numbers") from error
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise ValueError("the embeddings are not equally long lists of finite numbers")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not norms.all():
        raise ValueError("an embedding is all zeros")
    return np.asarray(matrix / norms, dtype=np.float32)


def _detail(response: httpx.Response) -> str:
    """The server's own error message (OpenAI's, vLLM's or TEI's shape), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    if not error and isinstance(body, dict):
        error = body.get("message")
    return str(error or body)[:200]


def _tokenizer(folder: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class RemoteEmbedder:
    """Embeds through an embeddings server; sizes chunks and cuts long inputs with a local
    tokenizer (the bundled model's unless one is given). Safe to share between threads."""

    backend = "remote"

    def __init__(
        self, options: EndpointOptions, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.name = options.model
        self.options = options
        self.endpoint = embeddings_endpoint(options.url)
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        timeout = httpx.Timeout(options.timeout_s, connect=min(options.timeout_s, 3.0))
        self._client = httpx.Client(transport=transport, headers=headers, timeout=timeout)
        self._tokenizer = _tokenizer(options.tokenizer or bundled_embedder_path())
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        """The vectors' length, learnt from the first answer (asked for when none came yet)."""
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def tokenize(self, text: str) -> list[int]:
        """Token ids without special tokens, for chunk sizing."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, one row per text. `batch_size` is the local backends'
        padding batch: a request carries at most the options' batch_size texts."""
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        step = self.options.batch_size
        return np.concatenate(
            [
                self._request(self._cut(texts[start : start + step]))
                for start in range(0, len(texts), step)
            ]
        )

    def _cut(self, texts: Sequence[str]) -> list[str]:
        """Each text cut to the model's window, so a server that refuses long inputs (vLLM,
        TEI without --auto-truncate) sees none, and one that truncates cuts at the same place."""
        limit = max(1, self.options.max_tokens - _SPECIAL_TOKENS)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [
            text if len(encoding.ids) <= limit else text[: encoding.offsets[limit - 1][1]]
            for text, encoding in zip(texts, encodings, strict=True)
        ]

    def _request(self, texts: list[str]) -> np.ndarray:
        response = self._post({"model": self.name, "input": texts, "encoding_format": "float"})
        if response.status_code != 200:
            raise self._failure(
                f"refused a batch: HTTP {response.status_code}: {_detail(response)}"
            )
        try:
            vectors = unit_vectors(response.json(), len(texts))
        except ValueError as error:
            raise self._failure(f"answered a malformed body: {error}") from error
        if self._dimension is None:
            self._dimension = int(vectors.shape[1])
        elif vectors.shape[1] != self._dimension:
            raise self._failure(
                f"answered vectors of {vectors.shape[1]} dimensions after {self._dimension}"
            )
        return vectors

    def _post(self, body: dict[str, object]) -> httpx.Response:
        """The server's answer, retried with backoff while it cannot be reached or is busy; a
        read timeout is not retried (the wait already took the whole budget)."""
        failure = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                time.sleep(0.25 * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.endpoint, json=body)
            except httpx.ConnectTimeout as error:
                raise self._failure("cannot be reached: the connection timed out") from error
            except httpx.TimeoutException as error:
                raise self._failure(f"did not answer within {self.options.timeout_s} s") from error
            except httpx.HTTPError as error:
                failure = f"cannot be reached: {error}"
                continue
            if response.status_code not in _RETRIED_STATUSES:
                return response
            failure = f"is unavailable: HTTP {response.status_code}: {_detail(response)}"
        raise self._failure(failure)

    def _failure(self, reason: str) -> EmbeddingsUnavailable:
        return EmbeddingsUnavailable(f"the embeddings server {self.endpoint} {reason}")
