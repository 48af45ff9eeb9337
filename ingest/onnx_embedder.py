"""The bundled embedder exported to ONNX (fp32, or int8 by dynamic quantisation) and run with
ONNX Runtime: the same vectors as sentence-transformers' mean pooling + normalisation, faster."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.model_loading import MODEL_LOAD_LOCK

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Held while one process exports; the others wait, then find the export done."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f".{folder.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _model_digest(model: Path) -> str:
    """A short digest of the weights, so a changed model gets its own export."""
    weights = model / "model.safetensors"
    stat = weights.stat()
    return hashlib.sha256(
        f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:12]


def _export_fp32(model: Path, target: Path) -> None:
    """Exports the transformer (token embeddings out; pooling stays in numpy)."""
    import torch
    from transformers import AutoModel

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(_INPUTS, inputs, strict=True))).last_hidden_state

    with MODEL_LOAD_LOCK:
        transformer = AutoModel.from_pretrained(str(model)).eval()
    sample = torch.ones((2, 8), dtype=torch.int64)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    # The tracer's warnings are about branches fixed at export time, which this model's are.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Hidden(transformer),
            (sample, sample, torch.zeros_like(sample)),
            str(target),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def exported_model(model: Path, cache_dir: Path, quantized: bool) -> Path:
    """The ONNX file for model under cache_dir, exported (and quantised) once, under a file lock."""
    folder = cache_dir / f"onnx-{model.parent.name}-{_model_digest(model)}"
    target = folder / ("model-int8.onnx" if quantized else "model.onnx")
    if target.exists():
        return target
    with _build_lock(folder):
        if target.exists():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        fp32 = folder / "model.onnx"
        if not fp32.exists():
            partial = folder / "model.onnx.partial"
            _export_fp32(model, partial)
            os.replace(partial, fp32)
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            partial = folder / "model-int8.onnx.partial"
            quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8)
            os.replace(partial, target)
    return target


class OnnxEncoder:
    """An exported model on ONNX Runtime: tokenise, run, mean-pool over real tokens, normalise."""

    def __init__(self, model: Path, onnx_file: Path, threads: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session: onnxruntime.InferenceSession = onnxruntime.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer: Tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._batcher: Tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._batcher.enable_truncation(_max_seq_length(model))
        self._batcher.enable_padding(pad_id=self._batcher.token_to_id("[PAD]") or 0)

    def token_ids(self, text: str) -> list[int]:
        """Token ids without special tokens, for chunk sizing."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens, one tokenizer call for all texts."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (one batch)."""
        encodings = self._batcher.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


def _max_seq_length(model: Path) -> int:
    """sentence-transformers' truncation length for the model (256 for all-MiniLM-L6-v2)."""
    config = model / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 256))
