"""From generated token ids to text: end tokens, stop strings, and pieces safe to stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from service.engines.base import FinishReason


def end_token_ids(folder: Path, eos_token_id: int | None) -> frozenset[int]:
    """The tokens that end an answer: the tokenizer's eos and every eos of the model's
    generation_config.json (a chat model often ends its turn with a token other than eos)."""
    ids = {eos_token_id} if eos_token_id is not None else set()
    try:
        declared = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        declared = None
    ids.update(declared if isinstance(declared, list) else [declared])
    return frozenset(i for i in ids if isinstance(i, int))


class StopStringScanner:
    """Finds stop strings in generated text and what text may be emitted safely."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(stop for stop in stops if stop)

    def first_stop(self, text: str) -> int | None:
        """The index where the earliest stop string begins, or None."""
        found = [index for stop in self._stops if (index := text.find(stop)) >= 0]
        return min(found) if found else None

    def safe_end(self, text: str) -> int:
        """The end of the prefix of text that cannot turn into the start of a stop string."""
        held = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:length]):
                    held = length
                    break
        return len(text) - held


class TokenDecoder:
    """Turns generated token ids, one at a time, into text pieces safe to stream."""

    def __init__(
        self, decode: Callable[[list[int]], str], eos_ids: frozenset[int], stops: tuple[str, ...]
    ) -> None:
        self._decode = decode
        self._eos_ids = eos_ids
        self._scanner = StopStringScanner(stops)
        self._token_ids: list[int] = []
        self._emitted = 0
        self.text = ""
        self.generated_tokens = 0
        self.finish_reason: FinishReason | None = None

    def add(self, token_id: int) -> str:
        """Takes one generated token; returns the newly emittable text."""
        if self.finish_reason is not None:
            return ""
        self.generated_tokens += 1
        if token_id in self._eos_ids:
            self.finish_reason = "stop"
            return ""
        self._token_ids.append(token_id)
        self.text = self._decode(self._token_ids)
        # A trailing U+FFFD is a multi-byte character that the next token completes.
        stable = self.text.rstrip("\ufffd")
        stop_at = self._scanner.first_stop(stable)
        if stop_at is not None:
            self.text = stable[:stop_at]
            self.finish_reason = "stop"
            return ""
        return self._emit_until(self._scanner.safe_end(stable))

    def remainder(self) -> str:
        """The text not emitted yet, once generation has ended."""
        return self._emit_until(len(self.text))

    def _emit_until(self, end: int) -> str:
        piece = self.text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return piece
