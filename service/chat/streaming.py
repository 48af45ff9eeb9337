"""A streamed answer as SSE `data:` lines in OpenAI's chunk format."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from service.chat.protocol import (
    ChatCompletionChunk,
    ChunkChoice,
    DeltaMessage,
    LadderInfo,
    UsageOut,
)
from service.chat.responses import logprobs_out
from service.engines.base import TextDelta, Usage
from service.errors import LadderError, error_body

DONE = "data: [DONE]\n\n"


def usage_out(usage: Usage) -> UsageOut:
    """The wire form of an engine's token counts."""
    return UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def error_line(error: LadderError) -> str:
    """A failure midway through a stream, as OpenAI's error body in one event."""
    return f"data: {json.dumps(error_body(error))}\n\n"


@dataclass(frozen=True)
class ChunkWriter:
    """Writes the chunks of one response: same id, creation time and model on every line."""

    id: str
    created: int
    model: str
    include_usage: bool

    def line(self, **fields: object) -> str:
        """One chunk as an SSE line."""
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, **fields)
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    def opening(self, info: LadderInfo) -> str:
        """The first chunk: the assistant's role, and what ladder did with the request."""
        role = DeltaMessage(role="assistant", content="")
        return self.line(choices=[ChunkChoice(delta=role)], ladder=info)

    def lines(self, delta: TextDelta, closing: LadderInfo | None = None) -> list[str]:
        """The lines one engine delta becomes: its text (with its tokens' logprobs when asked
        for), then the finish (carrying `closing`, the ladder info known only once the answer
        is whole) and usage when last."""
        lines = []
        if delta.text or delta.logprobs:
            content = DeltaMessage(content=delta.text)
            logprobs = logprobs_out(delta.logprobs) if delta.logprobs else None
            lines.append(self.line(choices=[ChunkChoice(delta=content, logprobs=logprobs)]))
        if delta.finish_reason is not None:
            end = ChunkChoice(delta=DeltaMessage(), finish_reason=delta.finish_reason)
            lines.append(self.line(choices=[end], ladder=closing))
            if self.include_usage:
                lines.append(self.line(choices=[], usage=usage_out(delta.usage or Usage(0, 0))))
        return lines


async def chained(
    first: TextDelta, rest: AsyncGenerator[TextDelta, None]
) -> AsyncGenerator[TextDelta, None]:
    """The first delta (already awaited) followed by the rest."""
    yield first
    async for delta in rest:
        yield delta
