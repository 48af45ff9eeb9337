"""Counts prompt tokens the way the model's chat template builds them."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.messages import ChatMessage


class ChatTokenizer:
    """A Hugging Face tokenizer with a chat template, loaded from a local folder.

    A fast tokenizer splits its input at added tokens (`<|im_start|>`...) before anything else,
    so a templated prompt's count is the sum of its text segments' counts plus one per added token.
    Segment counts are kept in an LRU of `cache_size` entries by a hash of their text: a system
    prompt, a few-shot turn or a repeated question is tokenised once. A tokenizer whose added
    tokens strip whitespace or are matched after normalisation is counted whole instead."""

    def __init__(self, folder: Path, cache_size: int = 4096) -> None:
        from transformers import AutoTokenizer

        self.folder = folder
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._lock = threading.Lock()
        self._added = _added_token_pattern(self._tokenizer)
        self._cache_size = cache_size
        self._segments: OrderedDict[bytes, int] = OrderedDict()

    @property
    def counts_by_segment(self) -> bool:
        """Whether prompts are counted by cached segments (else whole, each time)."""
        return self._added is not None

    def count(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the templated prompt, generation prompt included."""
        rendered = [{"role": m.role, "content": m.content} for m in messages]
        if self._added is None:
            return self._count_whole(rendered)
        text = self._tokenizer.apply_chat_template(
            rendered, add_generation_prompt=True, tokenize=False
        )
        # re.split with one group: segments at even positions, added tokens at odd ones.
        pieces = self._added.split(str(text))
        added = len(pieces) // 2
        return added + sum(self._segment(piece) for piece in pieces[::2] if piece)

    def _count_whole(self, rendered: list[dict[str, str]]) -> int:
        with self._lock:
            ids: Any = self._tokenizer.apply_chat_template(
                rendered, add_generation_prompt=True, tokenize=True
            )
        if not isinstance(ids, list):  # a BatchEncoding in some transformers versions
            ids = ids["input_ids"]
        return len(ids)

    def _segment(self, text: str) -> int:
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        with self._lock:
            found = self._segments.get(key)
            if found is not None:
                self._segments.move_to_end(key)
                return found
            count = len(self._tokenizer.backend_tokenizer.encode(text, add_special_tokens=False))
            if self._cache_size > 0:
                self._segments[key] = count
                while len(self._segments) > self._cache_size:
                    self._segments.popitem(last=False)
            return count


def _added_token_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern matching the tokenizer's added tokens as it does (leftmost, longest first), or
    None when segments would not count independently: a slow tokenizer, or added tokens that
    strip neighbouring whitespace, match single words only or match after normalisation."""
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        return None
    added = list(tokenizer.added_tokens_decoder.values())
    if any(t.lstrip or t.rstrip or t.single_word or t.normalized for t in added):
        return None
    contents = sorted({t.content for t in added if t.content}, key=len, reverse=True)
    if not contents:
        return None
    return re.compile("(" + "|".join(re.escape(content) for content in contents) + ")")


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A tokenizer-free estimate (4 characters a token, 4 tokens of framing a message)."""
    return sum(len(m.content) // 4 + 4 for m in messages) + 2
