"""The engine protocol: what the router's plan is sent to.

ChatMessage and SamplingParams live in service.messages and are re-exported here for engines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from service.messages import ChatMessage, OutputConstraint, SamplingParams, ToolCall

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class ToolUse:
    """The functions a request offers the model (OpenAI's `tools`, JSON-ready) and how it may
    call them (`tool_choice`, `parallel_tool_calls`; None leaves the engine's default)."""

    tools: tuple[dict[str, Any], ...]
    choice: str | dict[str, Any] | None = None
    parallel: bool | None = None


@dataclass(frozen=True)
class Capabilities:
    """The OpenAI chat parameters an engine honours, which of them also when streaming, and
    whether the model may choose to call a tool (`tool_choice` auto, which needs a tool-call
    parser); the chat service refuses anything else with a 400."""

    parameters: frozenset[str]
    streamed: frozenset[str]
    auto_tool_choice: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """What an engine is asked to do: messages, an optional adapter, sampling, and an optional
    constraint on the output's form."""

    messages: tuple[ChatMessage, ...]
    adapter: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    output: OutputConstraint | None = None
    tools: ToolUse | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability (OpenAI's shape): its text, UTF-8 bytes, and the most likely
    alternatives at its position (empty inside top_logprobs)."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top_logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Answer:
    """One choice of a generation; logprobs is None unless they were asked for."""

    text: str
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Completion:
    """A whole generation: one answer per choice asked for (n), and the tokens of all of them."""

    answers: tuple[Answer, ...]
    usage: Usage

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.answers[0].text

    @property
    def finish_reason(self) -> FinishReason:
        """Why the first choice ended."""
        return self.answers[0].finish_reason


@dataclass(frozen=True)
class TextDelta:
    """A piece of streamed text with the log-probabilities of its tokens (when asked for); the
    last one carries finish_reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


class Engine(Protocol):
    """A text generator behind the router: in-process or a vLLM server."""

    name: str
    capabilities: Capabilities

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
