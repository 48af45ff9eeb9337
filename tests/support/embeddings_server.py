"""A standalone OpenAI-compatible embeddings server for tests: ONNX Runtime over an exported
sentence-transformers model (mean pooling, unit length), on 127.0.0.1, standard library HTTP.

It imports nothing of ladder, so it stands for any server ladder may be pointed at:
`python tests/support/embeddings_server.py --port P --model-dir DIR --onnx FILE --served-name N`.
Routes: POST /v1/embeddings (input: a string or a list of strings), GET /v1/models, GET /health,
and GET /metrics (JSON: each embeddings request's input count, so tests can see the batching).
"""

from __future__ import annotations

import argparse
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from tokenizers import Tokenizer


class OnnxSentenceModel:
    """Tokenise (truncated to the model's window), run, mean-pool over real tokens, normalise."""

    def __init__(self, model_dir: Path, onnx_file: Path, max_tokens: int) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id("[PAD]") or 0)
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        with self._lock:
            hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


class EmbeddingsHandler(BaseHTTPRequestHandler):
    """The routes; the model, served name and request log live on the server object."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: with Nagle on, each answer on a kept-alive
    # connection waits for the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True
    server: EmbeddingsServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read /metrics, not an access log."""

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(HTTPStatus.OK, {"status": "ok"})
        elif self.path == "/metrics":
            self._reply(HTTPStatus.OK, {"request_inputs": list(self.server.request_inputs)})
        elif self.path == "/v1/models":
            model = {"id": self.server.served_name, "object": "model", "owned_by": "tests"}
            self._reply(HTTPStatus.OK, {"object": "list", "data": [model]})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "the body is not JSON")
            return
        if self.path != "/v1/embeddings":
            self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")
            return
        if body.get("model") != self.server.served_name:
            self._error(HTTPStatus.NOT_FOUND, f"The model `{body.get('model')}` does not exist.")
            return
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self._error(HTTPStatus.BAD_REQUEST, "input must be a string or a list of strings")
            return
        self.server.request_inputs.append(len(texts))
        vectors = self.server.model.embed(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": vector.tolist()}
            for i, vector in enumerate(vectors)
        ]
        tokens = sum(len(text.split()) for text in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._reply(
            HTTPStatus.OK,
            {"object": "list", "data": data, "model": self.server.served_name, "usage": usage},
        )


class EmbeddingsServer(ThreadingHTTPServer):
    """The HTTP server holding the one model it serves."""

    daemon_threads = True

    def __init__(self, port: int, model: OnnxSentenceModel, served_name: str) -> None:
        super().__init__(("127.0.0.1", port), EmbeddingsHandler)
        self.model = model
        self.served_name = served_name
        self.request_inputs: list[int] = []


def main() -> None:
    """Serves until killed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, required=True, help="Holds tokenizer.json.")
    parser.add_argument("--onnx", type=Path, required=True, help="The exported model.")
    parser.add_argument("--served-name", required=True)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    model = OnnxSentenceModel(args.model_dir, args.onnx, args.max_tokens)
    EmbeddingsServer(args.port, model, args.served_name).serve_forever()


if __name__ == "__main__":
    main()
