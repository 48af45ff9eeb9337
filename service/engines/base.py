"""The engine protocol: what the router's plan is sent to."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of the final prompt."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters after configuration defaults were applied."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """What an engine is asked to do: messages, an optional adapter, sampling."""

    messages: tuple[ChatMessage, ...]
    adapter: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    """A whole generation."""

    text: str
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True)
class TextDelta:
    """A piece of streamed text; the last one carries finish_reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


class Engine(Protocol):
    """A text generator behind the router: in-process or a vLLM server."""

    name: str

    async def complete(self, request: GenerationRequest) -> Completion:
        """Generates the whole answer."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        """Yields the answer piece by piece; the final delta has finish_reason and usage."""
        ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Counts the prompt tokens the chat template makes of these messages."""
        ...

    async def ready(self) -> bool:
        """Tells whether the engine can take a request now."""
        ...

    async def aclose(self) -> None:
        """Releases the engine's resources."""
        ...
