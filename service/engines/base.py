"""The engine protocol: what the router's plan is sent to.

ChatMessage and SamplingParams live in service.messages and are re-exported here for engines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from service.messages import ChatMessage, OutputConstraint, SamplingParams

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    """What an engine is asked to do: messages, an optional adapter, sampling, and an optional
    constraint on the output's form."""

    messages: tuple[ChatMessage, ...]
    adapter: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    output: OutputConstraint | None = None


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


@runtime_checkable
class LoadsAdapters(Protocol):
    """An engine that loads and unloads adapters while it serves (vLLM); one without this loads
    its adapters at start-up."""

    async def sync(self, names: Iterable[str]) -> list[str]:
        """Loads every named adapter's newest version now; returns the refs loaded."""
        ...

    async def unload(self, ref: str) -> bool:
        """Unloads one adapter version (once idle); True when it is gone now."""
        ...
