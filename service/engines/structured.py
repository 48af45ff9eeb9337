"""Constrained decoding: an OutputConstraint enforced on the local engine's logits, or handed to
vLLM as its structured-output request fields.

On the local engine, llguidance compiles the constraint's grammar for the tokenizer (cached, LRU
by constraint) and a logits processor masks, at every step, the tokens the grammar forbids; the
end token is allowed only where the grammar accepts the text so far.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Collection
from typing import Any

from service.errors import EngineError, InvalidRequest
from service.messages import OutputConstraint
from service.routing import output


class ConstraintCompiler:
    """Compiles constraints for one tokenizer. llguidance's view of the tokenizer takes about
    2 s to build, so it is built on first use, on the engine's worker thread."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, end_ids: Collection[int], cache_size: int = 64
    ) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._end_ids = sorted(end_ids)
        self._lock = threading.Lock()
        self._lltokenizer: Any = None
        self._matcher = functools.lru_cache(maxsize=cache_size)(self._compile)

    def processor(self, constraint: OutputConstraint | None) -> ConstrainedLogits | None:
        """A fresh logits processor for one generation, or None without a constraint; raises
        InvalidRequest (param response_format) when the constraint cannot be compiled."""
        if constraint is None:
            return None
        try:
            matcher = self._matcher(constraint)
        except output.OutputError as error:
            raise InvalidRequest(str(error), param="response_format") from error
        return ConstrainedLogits(matcher.deep_copy(), self._vocab_size)

    def _compile(self, constraint: OutputConstraint) -> Any:
        """A matcher in its start state; copies of it serve each generation."""
        from llguidance import LLMatcher

        matcher = LLMatcher(self._llguidance_tokenizer(), output.check(constraint), log_level=0)
        if matcher.is_error():
            raise output.OutputError(f"the constraint cannot be compiled: {matcher.get_error()}")
        return matcher

    def _llguidance_tokenizer(self) -> Any:
        with self._lock:
            if self._lltokenizer is None:
                import llguidance.hf

                self._lltokenizer = llguidance.hf.from_tokenizer(
                    self._tokenizer, n_vocab=self._vocab_size, eos_token=self._end_ids
                )
            return self._lltokenizer


class ConstrainedLogits:
    """A transformers logits processor for one generation (batch of one): it feeds the grammar
    the tokens generated since its last call, then sets every forbidden token's score to -inf."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        import llguidance.torch

        self._matcher = matcher
        self._vocab_size = vocab_size
        self._bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)
        self._prompt_length: int | None = None
        self._consumed = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch

        self._consume(input_ids[0].tolist())
        llguidance.torch.fill_next_token_bitmask(self._matcher, self._bitmask)
        scores.masked_fill_(~self._allowed(scores.shape[-1]), float("-inf"))
        return scores

    def _consume(self, ids: list[int]) -> None:
        if self._prompt_length is None:
            self._prompt_length = len(ids)
        new = ids[self._prompt_length + self._consumed :]
        if new and not self._matcher.consume_tokens(new):
            raise EngineError(f"constrained decoding failed: {self._matcher.get_error()}")
        self._consumed += len(new)

    def _allowed(self, width: int) -> Any:
        """The bitmask as one bool per score column (columns past the vocabulary are forbidden)."""
        import numpy as np
        import torch

        packed = self._bitmask[0].numpy().view(np.uint8)
        bits = np.unpackbits(packed, bitorder="little")[: min(width, self._vocab_size)]
        allowed = np.zeros(width, dtype=bool)
        allowed[: len(bits)] = bits.astype(bool)
        return torch.from_numpy(allowed)


# vLLM 0.32 sets the JSON layout per server, not per request: its xgrammar backend without free
# whitespace, so JSON stays on one line (written compactly). Its guidance backend with the same
# option let SmolLM2 spend a whole `tool_choice: required` answer on whitespace (finish "length",
# no call); xgrammar answers the same request with the call in 27 tokens.
VLLM_STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}


def vllm_fields(constraint: OutputConstraint | None) -> dict[str, Any]:
    """The constraint as vLLM's `structured_outputs` request field (empty without one)."""
    if constraint is None:
        return {}
    fields: dict[str, Any]
    if constraint.kind == "json_schema":
        fields = {"json": json.loads(constraint.schema or "{}")}
    elif constraint.kind == "json_object":
        fields = {"json_object": True}
    elif constraint.kind == "regex":
        fields = {"regex": constraint.pattern}
    else:
        fields = {"choice": list(constraint.choices)}
    return {"structured_outputs": fields}
