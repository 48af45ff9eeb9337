"""Counts prompt tokens the way the model's chat template builds them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.messages import ChatMessage


class ChatTokenizer:
    """A Hugging Face tokenizer with a chat template, loaded from a local folder."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._lock = threading.Lock()

    def count(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the templated prompt, generation prompt included."""
        rendered = [{"role": m.role, "content": m.content} for m in messages]
        with self._lock:
            ids: Any = self._tokenizer.apply_chat_template(
                rendered, add_generation_prompt=True, tokenize=True
            )
        if not isinstance(ids, list):  # a BatchEncoding in some transformers versions
            ids = ids["input_ids"]
        return len(ids)


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A tokenizer-free estimate (4 characters a token, 4 tokens of framing a message)."""
    return sum(len(m.content) // 4 + 4 for m in messages) + 2
