"""OpenAI-compatible wire models for chat completions, models and ladder's own additions."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from service.messages import ChatMessage, SamplingRequest

_PROMPT_ROLE: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
# torch.manual_seed and vLLM take a signed 64-bit seed; OpenAI's seeds are non-negative.
MAX_SEED = 2**63 - 1


def whole_text(value: str) -> str:
    """The value, refused when it holds a lone surrogate (not Unicode text: no tokenizer, JSON
    encoder or database can take it)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"holds a lone surrogate ({value[error.start]!r} at character {error.start})"
            ) from None
    return value


Text = Annotated[str, AfterValidator(whole_text)]


class ChatMessageIn(BaseModel):
    """A message of the client's conversation."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] = Field(description="Text, or OpenAI text content parts.")
    name: Text | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, str):
            whole_text(value)
            return value
        for part in value:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            whole_text(part["text"])
        return value

    def text(self) -> str:
        """The message's text, content parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part["text"] for part in self.content)


class StreamOptions(BaseModel):
    """OpenAI's stream options."""

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions; `model` names a ladder configuration."""

    model_config = ConfigDict(extra="ignore")

    model: Text = Field(min_length=1, description="The configuration (or experiment) to use.")
    messages: list[ChatMessageIn] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(None, max_length=256)
    n: int = Field(1, ge=1, le=1, description="Only one choice is generated.")

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (len(value) > 4 or any(not s for s in value)):
            raise ValueError("stop takes at most 4 non-empty strings")
        for stop in [value] if isinstance(value, str) else value or []:
            whole_text(stop)
        return value

    def stop_list(self) -> tuple[str, ...] | None:
        """Stop strings as a tuple; None when the client sent none."""
        if self.stop is None:
            return None
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def token_limit(self) -> int | None:
        """max_completion_tokens, or the older max_tokens."""
        return self.max_completion_tokens or self.max_tokens

    def token_limit_field(self) -> str:
        """The field token_limit() comes from, as the client named it."""
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    def conversation(self) -> tuple[ChatMessage, ...]:
        """The client's messages as prompt messages (a developer message is a system one)."""
        return tuple(ChatMessage(_PROMPT_ROLE[m.role], m.text()) for m in self.messages)

    def sampling_request(self) -> SamplingRequest:
        """The sampling values the client set; the configuration fills in the rest."""
        return SamplingRequest(
            self.temperature, self.top_p, self.token_limit(), self.stop_list(), self.seed
        )


class Citation(BaseModel):
    """A passage that was placed in the prompt."""

    number: int = Field(description="The passage's number in the context block.")
    source: str
    chunk_id: str
    score: float = Field(description="Cosine similarity of query and passage.")
    title: str = ""


class LadderInfo(BaseModel):
    """What ladder did with a request."""

    configuration: str
    layers: list[str]
    adapter: str | None
    citations: list[Citation] = Field(default_factory=list)
    retrieval: Literal["used", "empty", "skipped", "failed"] | None = None
    experiment: str | None = None
    arm: str | None = None
    few_shot_tokens: int = Field(0, description="Prompt tokens the few-shot turns cost.")
    context_tokens: int = Field(0, description="Prompt tokens the retrieved context costs.")
    prompt: list[dict[str, str]] | None = Field(
        None, description="The final messages, when debug prompts are on and asked for."
    )


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: UsageOut
    ladder: LadderInfo


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None
    ladder: LadderInfo | None = None


class ModelCard(BaseModel):
    """One configuration, as /v1/models lists it."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ladder"
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
