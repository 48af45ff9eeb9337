"""A chat request's limits, from the settings, and the ids its responses get."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from service.settings import Settings


@dataclass(frozen=True)
class ChatLimits:
    """Request limits and the model's window: 413 beyond the size limits, 400 for a `model`
    name or a token limit out of range."""

    max_messages: int = 64
    max_message_chars: int = 32_000
    max_total_chars: int = 100_000
    max_model_chars: int = 256
    max_tokens_ceiling: int = 2048
    max_n: int = 8
    context_window: int = 2048
    retrieval_timeout_s: float = 5.0
    token_count_cache: int = 4096


DEFAULT_CONTEXT_WINDOW = 2048


def chat_limits(settings: Settings, context_window: int | None = None) -> ChatLimits:
    """The request limits from the settings; context_window is the base model's resolved window
    (an engine handed in by a test has none: LADDER_CONTEXT_WINDOW, else 2048)."""
    return ChatLimits(
        max_messages=settings.max_messages,
        max_message_chars=settings.max_message_chars,
        max_total_chars=settings.max_total_chars,
        max_model_chars=settings.max_model_chars,
        max_tokens_ceiling=settings.max_tokens_ceiling,
        max_n=settings.max_n,
        context_window=context_window or settings.context_window or DEFAULT_CONTEXT_WINDOW,
        retrieval_timeout_s=settings.retrieval_timeout_s,
        token_count_cache=settings.token_count_cache,
    )


def response_id() -> str:
    """A new response id: made here, never taken from the client (whose X-Request-Id is only
    a correlation id), so no caller can choose, repeat or take over another's response."""
    return f"chatcmpl-{uuid.uuid4().hex}"
