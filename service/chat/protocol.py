"""OpenAI-compatible wire models for chat completions, models and ladder's own additions."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from service.chat.response_format import ResponseFormat, parse_response_format
from service.chat.tools import NamedToolChoice, ToolCallWire, ToolChoice, ToolSpec
from service.engines.base import ToolUse
from service.messages import ChatMessage, SamplingRequest

_PROMPT_ROLE: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
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

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = Field(
        None, description="Text, or OpenAI text content parts; null only beside tool_calls."
    )
    name: Text | None = None
    tool_calls: list[ToolCallWire] | None = Field(
        None, max_length=128, description="An assistant turn's function calls."
    )
    tool_call_id: Text | None = Field(
        None, max_length=256, description="A tool message: the call it answers."
    )

    @field_validator("content")
    @classmethod
    def _text_parts_only(
        cls, value: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        if isinstance(value, str):
            whole_text(value)
        if value is None or isinstance(value, str):
            return value
        for part in value:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            whole_text(part["text"])
        return value

    @model_validator(mode="after")
    def _tool_shape(self) -> ChatMessageIn:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message, and only a tool message, needs tool_call_id")
        if self.content is None and not self.tool_calls:
            raise ValueError("content may be null only on an assistant message with tool_calls")
        return self

    def text(self) -> str:
        """The message's text, content parts joined."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part["text"] for part in self.content)

    def prompt_message(self) -> ChatMessage:
        """The message as a prompt message (a developer message is a system one)."""
        calls = tuple(call.call() for call in self.tool_calls or ())
        return ChatMessage(_PROMPT_ROLE[self.role], self.text(), calls, self.tool_call_id)


class StreamOptions(BaseModel):
    """OpenAI's stream options."""

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions; `model` names a ladder configuration. A field ladder does not
    know is a 400 naming it (never silently ignored), and null means not set; a message's unknown
    fields are ignored, as clients send a response's message back with fields such as `refusal`."""

    model_config = ConfigDict(extra="forbid")

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
    n: int = Field(1, ge=1, le=128, description="Choices to generate (at most LADDER_MAX_N).")
    # OpenAI platform features with no effect on an answer: accepted and ignored by design.
    store: bool | None = Field(None, description="Accepted; ladder stores no completions.")
    metadata: dict[str, Text] | None = Field(None, max_length=16, description="Accepted; unused.")
    service_tier: Text | None = Field(None, max_length=32, description="Accepted; unused.")
    prompt_cache_key: Text | None = Field(None, max_length=256, description="Accepted; unused.")
    safety_identifier: Text | None = Field(None, max_length=256, description="Accepted; unused.")
    logprobs: bool | None = Field(None, description="Return each output token's logprob.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token.")
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) -> bias from -100 to 100 added to its logit."
    )
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    tools: list[ToolSpec] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = Field(
        None,
        description="text, json_object or json_schema (with name, schema, strict); overrides"
        " the configuration's output layer.",
    )

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (len(value) > 4 or any(not s for s in value)):
            raise ValueError("stop takes at most 4 non-empty strings")
        for stop in [value] if isinstance(value, str) else value or []:
            whole_text(stop)
        return value

    @field_validator("response_format", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> ResponseFormat | None:
        return parse_response_format(value)

    @field_validator("n", "stream", mode="before")
    @classmethod
    def _null_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """JSON null means "not set" (clients such as LiteLLM send every field)."""
        return cls.model_fields[str(info.field_name)].default if value is None else value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            # ASCII digits only: int() also reads "²" and "٣"; 9 digits bound the conversion.
            if not (token.isascii() and token.isdigit() and len(token) <= 9):
                raise ValueError(f"keys are token ids as decimal strings, not {token[:40]!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias {bias} for token {token} is outside -100..100")
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
        """The client's messages as prompt messages."""
        return tuple(message.prompt_message() for message in self.messages)

    def sampling_request(self) -> SamplingRequest:
        """The sampling values the client set; the configuration fills in the rest."""
        bias = tuple((int(token), value) for token, value in (self.logit_bias or {}).items())
        return SamplingRequest(
            self.temperature,
            self.top_p,
            self.token_limit(),
            self.stop_list(),
            self.seed,
            n=self.n,
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            logit_bias=bias,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
        )

    def tool_use(self) -> ToolUse | None:
        """The tools offered and how they may be called; None when no tools were sent."""
        if not self.tools:
            return None
        choice = self.tool_choice
        return ToolUse(
            tuple(tool.model_dump(exclude_none=True) for tool in self.tools),
            choice.model_dump() if isinstance(choice, NamedToolChoice) else choice,
            self.parallel_tool_calls,
        )


class Citation(BaseModel):
    """A passage that was placed in the prompt."""

    number: int = Field(description="The passage's number in the context block.")
    source: str
    chunk_id: str
    score: float = Field(description="Cosine similarity of query and passage.")
    title: str = ""
    cited: bool | None = Field(
        None,
        description="With `citations: inline`, whether the answer carries this passage's [n]"
        " marker; absent otherwise (and on a stream's first chunk).",
    )


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
    unmatched_markers: list[int] | None = Field(
        None,
        description="With `citations: inline`, the answer's [n] markers that name no passage:"
        " mapped to nothing.",
    )
    prompt: list[dict[str, str]] | None = Field(
        None, description="The final messages, when debug prompts are on and asked for."
    )


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    """A token and its log-probability, as OpenAI writes them."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(TopLogprob):
    """An output token's log-probability with the most likely alternatives at its position."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None


FinishReasonOut = Literal["stop", "length", "tool_calls"]


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallWire] | None = None

    @model_serializer(mode="wrap")
    def _content_always(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`content` is sent even when null (beside tool_calls), as OpenAI sends it, though
        responses are written without their other null fields."""
        data: dict[str, Any] = handler(self)
        data.setdefault("content", None)
        return data


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReasonOut
    logprobs: ChoiceLogprobs | None = None


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
    finish_reason: FinishReasonOut | None = None
    logprobs: ChoiceLogprobs | None = None


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
