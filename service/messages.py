"""The value types every layer shares: a prompt's messages and the sampling asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Temperatures below this sample greedily (vLLM's own threshold): dividing logits by 1e-300
# overflows to inf and NaN, which no sampler can draw from.
GREEDY_BELOW = 1e-5


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
class SamplingRequest:
    """The sampling a request asked for; None leaves the value to the configuration."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class OutputConstraint:
    """What the decoder may produce: text matching a JSON schema (`json_schema`, the schema as
    canonical JSON text), any JSON object (`json_object`), a regular expression (`regex`), or
    exactly one of fixed strings (`choice`). An engine enforces it while decoding."""

    kind: Literal["json_schema", "json_object", "regex", "choice"]
    schema: str | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
