"""The value types every layer shares: a prompt's messages and the sampling asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Temperatures below this sample greedily (vLLM's own threshold): dividing logits by 1e-300
# overflows to inf and NaN, which no sampler can draw from.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for: its id, the function's name, its JSON arguments."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message of the final prompt; an assistant turn may carry tool calls, and a `tool`
    message answers the call named by tool_call_id."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters after configuration defaults were applied: n choices; logprobs with
    top_logprobs alternatives per token; logit_bias as (token id, bias) pairs; OpenAI's additive
    presence and frequency penalties (0 is off)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class SamplingRequest:
    """The sampling a request asked for; None leaves the value to the configuration."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    # Per request only (no configuration default): OpenAI's defaults mean "off".
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class OutputConstraint:
    """What the decoder may produce: text matching a JSON schema (`json_schema`, the schema as
    canonical JSON text), any JSON object (`json_object`), a regular expression (`regex`), or
    exactly one of fixed strings (`choice`). An engine enforces it while decoding."""

    kind: Literal["json_schema", "json_object", "regex", "choice"]
    schema: str | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
