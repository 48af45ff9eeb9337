"""A scripted engine for fast API tests: answers what it was told, fails where it was told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from service.engines.base import (
    Answer,
    Capabilities,
    ChatMessage,
    Completion,
    GenerationRequest,
    TextDelta,
    Usage,
)
from service.engines.tokens import estimate_tokens
from service.errors import LadderError


@dataclass
class Script:
    """One queued answer: its pieces, and an error to raise after `fail_after` pieces."""

    pieces: list[str]
    error: LadderError | None = None
    fail_after: int = 0
    delay_s: float = 0.0


@dataclass
class ScriptedEngine:
    """Like simonw/llm's MockModel: enqueue answers, read `history` afterwards."""

    name: str = "scripted"
    queue: list[Script] = field(default_factory=list)
    history: list[GenerationRequest] = field(default_factory=list)
    is_ready: bool = True
    # None of OpenAI's optional parameters, so a test sees every one refused.
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(frozenset(), frozenset())
    )

    def enqueue(self, *pieces: str, error: LadderError | None = None, fail_after: int = 0) -> None:
        self.queue.append(Script(list(pieces), error, fail_after))

    def _next(self, request: GenerationRequest) -> Script:
        self.history.append(request)
        return self.queue.pop(0) if self.queue else Script(["ok"])

    async def complete(self, request: GenerationRequest) -> Completion:
        script = self._next(request)
        await asyncio.sleep(script.delay_s)
        if script.error is not None:
            raise script.error
        text = "".join(script.pieces)
        usage = Usage(self.count_tokens(request.messages), len(script.pieces))
        return Completion((Answer(text, "stop"),), usage)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        script = self._next(request)
        for number, piece in enumerate(script.pieces):
            if script.error is not None and number == script.fail_after:
                raise script.error
            yield TextDelta(piece)
        if script.error is not None and script.fail_after >= len(script.pieces):
            raise script.error
        usage = Usage(self.count_tokens(request.messages), len(script.pieces))
        yield TextDelta("", "stop", usage)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return estimate_tokens(messages)

    async def ready(self) -> bool:
        return self.is_ready

    async def aclose(self) -> None:
        return None
